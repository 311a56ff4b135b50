// Traces: the recent, slowest or failed ones (of one service, or all), and one trace as a
// waterfall: each span a bar on the trace's time line, children under their parent.

import { api, el, millis } from "./api.js";

const LIMIT = 50;

function startTime(micros) {
  return new Date(micros / 1000).toLocaleTimeString();
}

// Spans in tree order (a parent before its children, siblings by start), each with its depth.
export function spanTree(spans) {
  const ids = new Set(spans.map((s) => s.id));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parentId && ids.has(span.parentId) && span.parentId !== span.id) {
      if (!children.has(span.parentId)) children.set(span.parentId, []);
      children.get(span.parentId).push(span);
    } else {
      roots.push(span);
    }
  }
  const byStart = (a, b) => a.timestamp - b.timestamp || b.duration - a.duration;
  const out = [];
  const seen = new Set();
  const visit = (span, depth) => {
    if (seen.has(span.id)) return;
    seen.add(span.id);
    out.push({ span, depth });
    for (const child of (children.get(span.id) ?? []).sort(byStart)) visit(child, depth + 1);
  };
  for (const root of roots.sort(byStart)) visit(root, 0);
  return out;
}

function traceRow(item, onOpen) {
  return el("tr", {
    class: "clickable", "data-trace": item.traceId, "data-error": String(item.error),
    onclick: () => onOpen(item.traceId),
  },
  el("td", { text: startTime(item.start) }),
  el("td", { text: item.root }),
  el("td", { text: item.name }),
  el("td", { class: item.error ? "fail" : "", text: item.status || (item.error ? "error" : "") }),
  el("td", { class: "number", text: millis(item.duration / 1000) }),
  el("td", { class: "number", text: String(item.spans) }),
  el("td", { text: item.services.join(", ") }));
}

function spanRow({ span, depth }, start, total) {
  const bar = el("div", { class: "span-bar" });
  bar.style.left = `${((span.timestamp - start) / total) * 100}%`;
  bar.style.width = `${(span.duration / total) * 100}%`;
  const label = el("div", { class: "span-label", title: span.name },
    `${"\u00a0\u00a0".repeat(depth)}${span.service} `, el("small", { text: `${span.kind} ${span.name}` }));
  const row = el("div", {
    class: "span-row", "data-service": span.service, "data-kind": span.kind,
    "data-error": String(span.error), "data-span": span.id,
  }, label, el("div", { class: "span-track" }, bar),
  el("div", { class: "span-duration", text: millis(span.duration / 1000) }));
  row.addEventListener("click", () => {
    const tags = Object.entries(span.tags).map(([k, v]) => `${k}: ${v}`).join("\n");
    document.querySelector("#span-tags").textContent =
      `${span.service} ${span.kind} ${span.name}\nspan ${span.id}, parent ${span.parentId ?? "-"}\n\n${tags}`;
  });
  return row;
}

export class TracesView {
  constructor() {
    this.mode = "recent";
    this.shown = "";
    this.selected = null;
  }

  bind(redraw) {
    for (const button of document.querySelectorAll("#trace-modes button")) {
      button.addEventListener("click", () => {
        this.mode = button.dataset.mode;
        for (const other of document.querySelectorAll("#trace-modes button")) {
          other.setAttribute("aria-pressed", String(other === button));
        }
        redraw();
      });
    }
    document.querySelector("#trace-service").addEventListener("change", redraw);
  }

  opened() {}

  clear() {
    this.shown = "";
    this.selected = null;
    document.querySelector("#traces tbody").replaceChildren();
    document.querySelector("#waterfall").hidden = true;
  }

  async refresh() {
    const service = document.querySelector("#trace-service").value.trim();
    const list = await api("/telemetry/v1/traces", {
      service,
      order: this.mode === "slowest" ? "slowest" : "recent",
      errors: this.mode === "failed" ? "true" : "",
      limit: LIMIT,
    });
    // Redrawn only when it changed: rows stay put under the pointer.
    const signature = JSON.stringify(list.items);
    if (signature === this.shown) return;
    this.shown = signature;
    const rows = list.items.map((item) => traceRow(item, (id) => this.open(id)));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "empty", text: "No traces kept." })));
    document.querySelector("#traces tbody").replaceChildren(...rows);
    this.mark();
  }

  mark() {
    for (const row of document.querySelectorAll("#traces tbody tr")) {
      row.classList.toggle("selected", row.dataset.trace === this.selected);
    }
  }

  async open(traceId) {
    this.selected = traceId;
    this.mark();
    let trace;
    try {
      trace = await api(`/telemetry/v1/traces/${encodeURIComponent(traceId)}`);
    } catch (error) {
      document.querySelector("#error").textContent = `Could not open the trace: ${error.message}`;
      document.querySelector("#error").hidden = false;
      return;
    }
    const spans = trace.spans;
    const start = Math.min(...spans.map((s) => s.timestamp));
    const end = Math.max(...spans.map((s) => s.timestamp + s.duration));
    const total = Math.max(end - start, 1);
    document.querySelector("#waterfall-title").textContent =
      `Trace ${trace.traceId}: ${spans.length} spans, ${millis(total / 1000)}`;
    document.querySelector("#spans").replaceChildren(
      ...spanTree(spans).map((entry) => spanRow(entry, start, total)));
    document.querySelector("#span-tags").textContent = "";
    document.querySelector("#waterfall").hidden = false;
  }
}
