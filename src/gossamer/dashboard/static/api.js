// The control plane's API as the page uses it: the token (kept in this tab's sessionStorage),
// fetch with the bearer header, and small DOM and number helpers shared by the views.

const TOKEN_KEY = "gossamer.dashboard.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.message) message = body.message;
  } catch (ignored) {
    // not a Status body: the status line says enough
  }
  return new ApiError(response.status, message);
}

// GET a path of the API with the bearer token; `params` become the query string.
export async function api(path, params = {}, bearer = token()) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${bearer}`, Accept: "application/json" },
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// A one-time login code (from `gossamer dashboard`) for a read-only session token.
export async function exchangeCode(code) {
  const response = await fetch("/dashboard/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code }),
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok) throw await failure(response);
  return (await response.json()).token;
}

// An element with attributes (`text` sets its text, never HTML) and children.
export function el(tag, attributes = {}, ...children) {
  const svg = ["svg", "g", "rect", "path", "text", "polyline", "line", "title", "marker",
    "defs", "circle"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (name === "text") node.textContent = value;
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function percent(rate) {
  return rate === null || rate === undefined ? "-" : `${(rate * 100).toFixed(rate === 1 ? 0 : 1)}%`;
}

export function millis(value) {
  if (value === null || value === undefined) return "-";
  return value >= 100 ? `${Math.round(value)} ms` : `${value.toFixed(1)} ms`;
}

export function rate(rps) {
  return rps >= 10 ? rps.toFixed(0) : rps.toFixed(2);
}

// ok / warn / fail by success rate, none without requests: what colours nodes, edges and rows.
export function health(successRate, requests = 1) {
  if (!requests || successRate === null || successRate === undefined) return "none";
  if (successRate >= 0.99) return "ok";
  return successRate >= 0.95 ? "warn" : "fail";
}
