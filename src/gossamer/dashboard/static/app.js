// The dashboard's shell: login (a pasted token, or a one-time link's code), the tabs, and the
// refresh loop that redraws the open view every two seconds.

import { ApiError, api, clearToken, exchangeCode, setToken, token } from "./api.js";
import { GraphView } from "./graph.js";
import { MetricsView } from "./metrics.js";
import { TracesView } from "./traces.js";
import { ConfigView, ProxiesView } from "./config.js";

const REFRESH_MS = 2000;
const $ = (selector) => document.querySelector(selector);

const views = {
  graph: new GraphView(),
  services: new MetricsView(),
  traces: new TracesView(),
  proxies: new ProxiesView(),
  config: new ConfigView(),
};
let current = "graph";
let timer = null;
let busy = false;

function windowSeconds() {
  return Number($("#window").value);
}

// Whether a token may read the mesh: a wrong one is refused by the API, a token that reads
// nothing (a workload's) by the page.
async function check(bearer) {
  const who = await api("/dashboard/v1/whoami", {}, bearer);
  if (!who.readsMesh) {
    throw new ApiError(403, `this token (${who.name}) may not read the mesh's telemetry`);
  }
  return who;
}

function showLogin(message = "") {
  stop();
  $("#login-panel").hidden = false;
  $("#tabs").hidden = true;
  $("#session").hidden = true;
  $("#error").hidden = true;
  for (const section of document.querySelectorAll(".view")) section.hidden = true;
  for (const view of Object.values(views)) view.clear();
  $("#login-error").textContent = message;
  $("#token").value = "";
  $("#token").focus();
}

function showApp(who) {
  $("#login-panel").hidden = true;
  $("#login-error").textContent = "";
  $("#tabs").hidden = false;
  $("#session").hidden = false;
  $("#who").textContent = who.name;
  open(current);
}

function open(tab) {
  current = tab;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.setAttribute("aria-pressed", String(button.dataset.tab === tab));
  }
  for (const [name, view] of Object.entries(views)) {
    $(`#${name}-view`).hidden = name !== tab;
    if (name === tab) view.opened();
  }
  stop();
  refresh();
}

function stop() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  $("#live").classList.remove("on");
}

async function refresh() {
  if (busy) return;
  busy = true;
  const view = views[current];
  try {
    await view.refresh(windowSeconds());
    $("#error").hidden = true;
    $("#live").classList.add("on");
  } catch (error) {
    $("#live").classList.remove("on");
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      clearToken();
      busy = false;
      showLogin(`Logged out: ${error.message}`);
      return;
    }
    $("#error").textContent = `Could not refresh: ${error.message}`;
    $("#error").hidden = false;
  } finally {
    busy = false;
  }
  if (token() !== null) timer = setTimeout(refresh, REFRESH_MS);
}

async function login(event) {
  event.preventDefault();
  const pasted = $("#token").value.trim();
  if (!pasted) return;
  $("#login-error").textContent = "Checking…";
  try {
    const who = await check(pasted);
    setToken(pasted);
    showApp(who);
  } catch (error) {
    const why = error instanceof ApiError ? error.message : `the control plane did not answer (${error.message})`;
    $("#login-error").textContent = `Token refused: ${why}`;
  }
}

// A one-time link (`gossamer dashboard`) carries its code in the fragment, which the browser
// never sends; it is removed from the address bar (and history) before anything else.
async function fromLink() {
  const match = /^#login=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
  if (match === null) return null;
  window.history.replaceState(null, "", window.location.pathname);
  try {
    setToken(await exchangeCode(match[1]));
    return null;
  } catch (error) {
    return `Login link refused: ${error.message}`;
  }
}

async function boot() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => {
    clearToken();
    showLogin();
  });
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => open(button.dataset.tab));
  }
  $("#window").addEventListener("change", () => {
    stop();
    refresh();
  });
  for (const view of Object.values(views)) view.bind(() => {
    stop();
    refresh();
  });
  const refused = await fromLink();
  const saved = token();
  if (refused !== null || saved === null) {
    showLogin(refused ?? "");
    return;
  }
  try {
    showApp(await check(saved));
  } catch (error) {
    clearToken();
    showLogin(`Logged out: ${error.message}`);
  }
}

boot();
