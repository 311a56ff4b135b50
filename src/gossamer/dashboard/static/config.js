// What the control plane runs: each proxy's config version and sync state (as `gossamer
// proxy-status`), and the objects in the store by kind, one shown as YAML or JSON (`gossamer get`).

import { api, el } from "./api.js";

function timeLeft(expiry) {
  if (!expiry) return "-";
  const seconds = Math.max(0, Math.round(expiry - Date.now() / 1000));
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  return hours ? `${hours}h${String(minutes).padStart(2, "0")}m` : `${minutes}m${seconds % 60}s`;
}

export class ProxiesView {
  bind() {}

  opened() {}

  clear() {
    document.querySelector("#proxies tbody").replaceChildren();
  }

  async refresh() {
    const { items } = await api("/debug/v1/proxies");
    const rows = items.map((item) => el("tr", { "data-proxy": item.proxy, "data-state": item.state },
      el("td", { text: item.proxy }),
      el("td", { text: `${item.workload}.${item.namespace}` }),
      el("td", { text: item.role }),
      el("td", { class: "state", text: item.state }),
      el("td", { text: String(item.sent ?? "") }),
      el("td", { text: String(item.acked ?? "") }),
      el("td", { text: timeLeft(Number(item.certificateExpiry || 0)) }),
      el("td", { text: item.controlPlane }),
      el("td", { class: "fail", text: item.error })));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 9, class: "empty", text: "No proxy is connected." })));
    document.querySelector("#proxies tbody").replaceChildren(...rows);
  }
}

const PLAIN = /^[A-Za-z0-9_./@-][A-Za-z0-9_ ./@:-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|~|-?[0-9][0-9_.eE+-]*)$/i;

function scalar(value) {
  if (value === null) return "null";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  const text = String(value);
  if (text === "" || !PLAIN.test(text) || RESERVED.test(text) || text.endsWith(" ")) return JSON.stringify(text);
  return text;
}

// YAML for a JSON value (block style; strings quoted where YAML would read them otherwise).
export function toYaml(value, indent = "") {
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return value.map((item) => {
      const inner = toYaml(item, `${indent}  `);
      const nested = item !== null && typeof item === "object" && Object.keys(item).length;
      return `${indent}- ${nested ? inner.trimStart() : inner}`;
    }).join("\n");
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return "{}";
    return keys.map((key) => {
      const item = value[key];
      const nested = item !== null && typeof item === "object" && Object.keys(item).length;
      const name = scalar(key);
      return nested ? `${indent}${name}:\n${toYaml(item, Array.isArray(item) ? indent : `${indent}  `)}`
        : `${indent}${name}: ${toYaml(item, indent)}`;
    }).join("\n");
  }
  return scalar(value);
}

export class ConfigView {
  constructor() {
    this.loaded = false;
    this.format = "yaml";
    this.object = null;
  }

  bind() {
    document.querySelector("#config-reload").addEventListener("click", () => this.load());
    for (const button of document.querySelectorAll("#object-formats button")) {
      button.addEventListener("click", () => {
        this.format = button.dataset.format;
        for (const other of document.querySelectorAll("#object-formats button")) {
          other.setAttribute("aria-pressed", String(other === button));
        }
        this.show(this.object);
      });
    }
  }

  opened() {
    if (!this.loaded) this.load();
  }

  clear() {
    this.loaded = false;
    this.object = null;
    for (const id of ["#kinds", "#objects", "#object"]) document.querySelector(id).replaceChildren();
  }

  // Nothing to redraw every two seconds: objects are read when the tab opens or on Reload.
  async refresh() {}

  async load() {
    this.loaded = true;
    const kinds = (await api("/dashboard/v1/kinds")).items;
    const lists = await Promise.all(kinds.map((kind) => api(kind.path).then(
      (list) => list.items ?? [], () => [])));
    const entries = kinds.map((kind, index) => ({ kind, items: lists[index] }))
      .filter((entry) => entry.items.length);
    document.querySelector("#kinds").replaceChildren(...entries.map((entry) => el("li", {
      "data-kind": entry.kind.kind, onclick: (event) => this.pick(event.currentTarget, entry),
    }, `${entry.kind.kind} `, el("small", { text: entry.kind.group || "core" }),
    el("span", { class: "count", text: String(entry.items.length) }))));
    document.querySelector("#objects").replaceChildren();
    this.show(null);
  }

  pick(item, entry) {
    for (const other of document.querySelectorAll("#kinds li")) other.classList.toggle("selected", other === item);
    const sorted = [...entry.items].sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`
      .localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
    document.querySelector("#objects").replaceChildren(...sorted.map((object) => el("li", {
      "data-name": object.metadata.name, "data-namespace": object.metadata.namespace ?? "",
      onclick: (event) => {
        for (const other of document.querySelectorAll("#objects li")) other.classList.toggle("selected", other === event.currentTarget);
        this.show(object);
      },
    }, `${object.metadata.namespace ?? ""}/${object.metadata.name}`)));
  }

  show(object) {
    this.object = object;
    const text = object === null ? "" : this.format === "yaml" ? toYaml(object) : JSON.stringify(object, null, 2);
    document.querySelector("#object").textContent = text;
  }
}
