// Golden metrics per service (or per workload): rate, success, latency quantiles over the
// chosen window, and sparklines of the last 15 minutes from the store's 10 s slots.

import { api, el, health, millis, percent, rate } from "./api.js";
import { sparkline } from "./charts.js";

const HISTORY_S = 900;

function last(values) {
  const known = values.filter((v) => v !== null);
  return known.length ? known[known.length - 1] : null;
}

function row(item, history) {
  const name = `${item.name}.${item.namespace}`;
  const rps = history?.rps ?? [];
  const success = history?.successRate ?? [];
  const p95 = history?.latencyP95 ?? [];
  return el("tr", { "data-service": name, "data-health": health(item.successRate, item.requests) },
    el("td", { text: item.name }),
    el("td", { text: item.namespace }),
    el("td", { class: "number", text: rate(item.rps) }),
    el("td", { class: "number health", text: percent(item.successRate) }),
    el("td", { class: "number", text: millis(item.latencyP50) }),
    el("td", { class: "number", text: millis(item.latencyP95) }),
    el("td", { class: "number", text: millis(item.latencyP99) }),
    el("td", {}, sparkline(rps, { label: `requests per second, last ${rate(last(rps) ?? 0)}` })),
    el("td", {}, sparkline(success, {
      ceiling: 1, className: "success", label: `success rate, last ${percent(last(success))}`,
    })),
    el("td", {}, sparkline(p95, { label: `p95, last ${millis(last(p95))}` })));
}

export class MetricsView {
  bind(redraw) {
    document.querySelector("#stat-kind").addEventListener("change", redraw);
  }

  opened() {}

  clear() {
    document.querySelector("#services tbody").replaceChildren();
  }

  async refresh(windowSeconds) {
    const kind = document.querySelector("#stat-kind").value;
    const [stat, history] = await Promise.all([
      api("/telemetry/v1/stat", { kind, window: windowSeconds }),
      api("/telemetry/v1/history", { kind, window: HISTORY_S }),
    ]);
    const byName = new Map(history.items.map((h) => [`${h.name}.${h.namespace}`, h]));
    const rows = stat.items.map((item) => row(item, byName.get(`${item.name}.${item.namespace}`)));
    if (!rows.length) {
      rows.push(el("tr", {}, el("td", { colspan: 10, class: "empty", text: "No requests in this window yet." })));
    }
    document.querySelector("#services tbody").replaceChildren(...rows);
  }
}
