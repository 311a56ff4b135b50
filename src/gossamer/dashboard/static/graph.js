// The service graph: services (and callers that serve none, such as the gateway) as nodes in
// layers from the callers on the left, calls as edges with their rate and success, coloured by
// health. Drawn as SVG, laid out here: no library.

import { api, el, health, percent, rate } from "./api.js";

const NODE_W = 220;
const NODE_H = 46;
const COLUMN = 380;
const ROW = 80;
const MARGIN = 20;

// Calls between nodes: a caller workload stands for the service it serves (frontend the
// Deployment is frontend the service), so the graph reads gateway -> frontend -> greeter.
export function buildGraph(graph) {
  const servesFor = new Map();
  for (const { workload, service } of graph.serves ?? []) {
    if (!servesFor.has(workload)) servesFor.set(workload, service);
  }
  const nodes = new Map();
  const node = (id, kind) => {
    if (!nodes.has(id)) nodes.set(id, { id, kind, rps: 0, failing: 0, incoming: 0 });
    return nodes.get(id);
  };
  for (const item of graph.nodes) {
    if (item.kind === "service" || !servesFor.has(item.id)) node(item.id, item.kind);
  }
  const edges = new Map();
  for (const edge of graph.edges) {
    const source = servesFor.get(edge.source) ?? edge.source;
    if (source === edge.destination) continue;
    node(source, servesFor.has(edge.source) ? "service" : "workload");
    const target = node(edge.destination, "service");
    const key = `${source}\t${edge.destination}`;
    const merged = edges.get(key) ?? { source, destination: edge.destination, rps: 0, failing: 0 };
    merged.rps += edge.rps;
    merged.failing += edge.rps * edge.errorRate;
    edges.set(key, merged);
    target.rps += edge.rps;
    target.failing += edge.rps * edge.errorRate;
    target.incoming += 1;
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()] };
}

// Each node's layer: the longest chain of calls that reaches it (cycles are cut by the bound).
export function layers(nodes, edges) {
  const layer = new Map(nodes.map((n) => [n.id, 0]));
  for (let pass = 0; pass < nodes.length; pass += 1) {
    let moved = false;
    for (const edge of edges) {
      const next = layer.get(edge.source) + 1;
      if (next > layer.get(edge.destination) && next < nodes.length) {
        layer.set(edge.destination, next);
        moved = true;
      }
    }
    if (!moved) break;
  }
  return layer;
}

function successOf(item) {
  return item.rps > 0 ? 1 - item.failing / item.rps : null;
}

function positions(nodes, edges) {
  const layer = layers(nodes, edges);
  const columns = new Map();
  for (const n of [...nodes].sort((a, b) => a.id.localeCompare(b.id))) {
    const column = layer.get(n.id);
    if (!columns.has(column)) columns.set(column, []);
    columns.get(column).push(n);
  }
  const at = new Map();
  let rows = 0;
  for (const [column, members] of columns) {
    members.forEach((n, index) => {
      at.set(n.id, { x: MARGIN + column * COLUMN, y: MARGIN + index * ROW });
    });
    rows = Math.max(rows, members.length);
  }
  const width = MARGIN * 2 + (Math.max(0, ...columns.keys()) * COLUMN) + NODE_W;
  return { at, width, height: MARGIN * 2 + Math.max(0, rows - 1) * ROW + NODE_H };
}

function drawEdge(edge, from, to) {
  const x1 = from.x + NODE_W;
  const y1 = from.y + NODE_H / 2;
  const x2 = to.x;
  const y2 = to.y + NODE_H / 2;
  const bend = Math.max(40, (x2 - x1) / 2);
  const d = `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
  const success = successOf(edge);
  const state = health(success, edge.rps);
  const label = `${rate(edge.rps)} rps · ${percent(success)}`;
  return el("g", {
    class: "edge", "data-source": edge.source, "data-destination": edge.destination,
    "data-health": state,
  },
  el("path", { d, "marker-end": `url(#arrow-${state})` }),
  el("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 10, "text-anchor": "middle", text: label }),
  el("title", { text: `${edge.source} → ${edge.destination}: ${label}` }));
}

function drawNode(n, where) {
  const success = n.incoming ? successOf(n) : null;
  const state = n.incoming ? health(success, n.rps) : "none";
  const detail = n.incoming ? `${rate(n.rps)} rps in · ${percent(success)}` : n.kind;
  return el("g", {
    class: "node", "data-id": n.id, "data-kind": n.kind, "data-health": state,
    transform: `translate(${where.x},${where.y})`,
  },
  el("rect", { width: NODE_W, height: NODE_H }),
  el("text", { x: 10, y: 19, text: n.id }),
  el("text", { x: 10, y: 36, class: "sub", text: detail }),
  el("title", { text: `${n.id} (${n.kind}): ${detail}` }));
}

function arrows() {
  const defs = el("defs");
  for (const [state, colour] of [["ok", "#1a7f37"], ["warn", "#b58100"], ["fail", "#cf222e"],
    ["none", "#8c959f"]]) {
    defs.append(el("marker", {
      id: `arrow-${state}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8,
      markerHeight: 8, orient: "auto-start-reverse",
    }, el("path", { d: "M0,0 L10,5 L0,10 z", fill: colour })));
  }
  return defs;
}

export class GraphView {
  bind() {}

  opened() {}

  clear() {
    document.querySelector("#graph").replaceChildren();
  }

  async refresh(windowSeconds) {
    const graph = await api("/telemetry/v1/graph", { window: windowSeconds });
    this.draw(buildGraph(graph));
  }

  draw({ nodes, edges }) {
    const svg = document.querySelector("#graph");
    document.querySelector("#graph-empty").hidden = nodes.length > 0;
    const { at, width, height } = positions(nodes, edges);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("height", String(height));
    const drawn = [arrows()];
    for (const edge of edges) drawn.push(drawEdge(edge, at.get(edge.source), at.get(edge.destination)));
    for (const n of nodes) drawn.push(drawNode(n, at.get(n.id)));
    svg.replaceChildren(...drawn);
  }
}
