// The dashboard: logs in through the auth service, lists assets from the bff, follows changes live.
"use strict";

const api = "/assetdashboard/api";
const session = {
  get access() { return sessionStorage.getItem("access"); },
  get refresh() { return sessionStorage.getItem("refresh"); },
  save(tokens) {
    sessionStorage.setItem("access", tokens.accessToken);
    sessionStorage.setItem("refresh", tokens.refreshToken);
    sessionStorage.setItem("expires", String(Date.now() + tokens.expiresIn * 1000));
  },
  clear() { sessionStorage.clear(); },
  claims() {
    const payload = this.access.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  },
};
const rows = new Map();
let streamAbort = null;

async function post(path, body) {
  const answer = await fetch(path, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const text = await answer.text();
  const data = text ? JSON.parse(text) : {};
  if (!answer.ok) throw new Error(data.error || `${answer.status} ${answer.statusText}`);
  return data;
}

async function authorized(path, options = {}) {
  if (Number(sessionStorage.getItem("expires")) - Date.now() < 30000) await refresh();
  const headers = { ...(options.headers || {}), authorization: `Bearer ${session.access}` };
  const answer = await fetch(path, { ...options, headers });
  if (answer.status === 401) { logout(); throw new Error("session ended; log in again"); }
  return answer;
}

async function refresh() {
  try { session.save(await post("/auth/refresh", { refreshToken: session.refresh })); }
  catch (error) { logout(); throw error; }
}

function logout() {
  if (session.refresh) post("/auth/logout", { refreshToken: session.refresh }).catch(() => {});
  if (streamAbort) streamAbort.abort();
  session.clear();
  show();
}

function show() {
  const inside = Boolean(session.access);
  document.getElementById("login-panel").hidden = inside;
  document.getElementById("dashboard").hidden = !inside;
  document.getElementById("logout").hidden = !inside;
  document.getElementById("who").textContent = inside ? session.claims().preferred_username : "";
  if (inside) load();
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) {
    const span = document.createElement("span");
    span.className = className;
    span.textContent = text;
    td.appendChild(span);
  } else {
    td.textContent = text;
  }
  return td;
}

function render(asset, flash) {
  const band = asset.band || "unassessed";
  const tr = document.createElement("tr");
  tr.dataset.asset = asset.assetId;
  tr.dataset.band = band;
  tr.append(
    cell(`${asset.name} (${asset.assetId})`), cell(asset.type), cell(asset.site),
    cell(asset.ownerName || asset.owner), cell(asset.status),
    cell(band, `band band-${band}`),
    cell(asset.score == null ? "" : asset.score.toFixed(2)),
  );
  if (flash) tr.classList.add("flash");
  const old = rows.get(asset.assetId);
  if (old) old.replaceWith(tr); else document.querySelector("#assets tbody").appendChild(tr);
  rows.set(asset.assetId, tr);
}

async function load() {
  const answer = await authorized(`${api}/assets`);
  const data = await answer.json();
  document.querySelector("#assets tbody").replaceChildren();
  rows.clear();
  data.assets.forEach((asset) => render(asset, false));
  summary();
  follow(data.cursor);
}

async function summary() {
  const data = await (await authorized(`${api}/summary`)).json();
  const box = document.getElementById("summary");
  box.replaceChildren();
  for (const [site, bands] of Object.entries(data.assetsBySiteAndBand)) {
    const div = document.createElement("div");
    div.textContent = `${site}: ` + Object.entries(bands).map(([b, n]) => `${n} ${b}`).join(", ");
    box.appendChild(div);
  }
}

// Counts per site follow the rows, at most twice a second.
let summaryTimer = null;
function summarySoon() {
  if (summaryTimer === null) {
    summaryTimer = setTimeout(() => { summaryTimer = null; summary().catch(() => {}); }, 500);
  }
}

// Server-sent events over fetch (EventSource cannot send the bearer token); reconnects.
async function follow(cursor) {
  if (streamAbort) streamAbort.abort();
  const controller = new AbortController();
  streamAbort = controller;
  const live = document.getElementById("live");
  while (!controller.signal.aborted && session.access) {
    try {
      const answer = await authorized(`${api}/stream?cursor=${cursor}`, { signal: controller.signal });
      live.classList.add("on");
      const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = message.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("");
          const id = message.split("\n").find((l) => l.startsWith("id: "));
          if (id) cursor = Number(id.slice(4));
          if (data) { render(JSON.parse(data), true); summarySoon(); }
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    live.classList.remove("on");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const error = document.getElementById("login-error");
  error.textContent = "";
  try {
    session.save(await post("/auth/login", { username: form.get("username"), password: form.get("password") }));
    show();
  } catch (failure) { error.textContent = failure.message; }
});

document.getElementById("register").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const note = document.getElementById("register-note");
  try {
    await post("/users/register", Object.fromEntries(form));
    note.textContent = "Registered: confirm with the link in the mail we sent.";
  } catch (failure) { note.textContent = failure.message; }
});

document.getElementById("add-asset").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("add-error");
  error.textContent = "";
  const answer = await authorized(`${api}/assets`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify(Object.fromEntries(new FormData(event.target))),
  });
  if (!answer.ok) error.textContent = (await answer.json()).error;
  else event.target.reset();
});

document.getElementById("logout").addEventListener("click", logout);

// A confirmation link from the mail: #confirm=TOKEN
const confirm = /#confirm=([\w-]+)/.exec(location.hash);
if (confirm) {
  post("/users/confirm", { token: confirm[1] })
    .then(() => { document.getElementById("register-note").textContent = "Account confirmed: log in."; })
    .catch((error) => { document.getElementById("register-note").textContent = error.message; });
  history.replaceState(null, "", location.pathname);
}
show();
