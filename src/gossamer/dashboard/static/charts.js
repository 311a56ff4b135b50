// Sparklines: a series of numbers (null for no data) as a small SVG polyline.

import { el } from "./api.js";

const WIDTH = 120;
const HEIGHT = 24;

// `floor` and `ceiling` fix the scale (a success rate is drawn between 0 and 1); otherwise the
// series' own maximum is the top.
export function sparkline(values, { floor = 0, ceiling = null, className = "", label = "" } = {}) {
  const known = values.filter((v) => v !== null && v !== undefined);
  const top = ceiling ?? Math.max(...known, 0);
  const span = top - floor || 1;
  const step = values.length > 1 ? WIDTH / (values.length - 1) : WIDTH;
  const points = [];
  values.forEach((value, index) => {
    if (value === null || value === undefined) return;
    const y = HEIGHT - 2 - ((value - floor) / span) * (HEIGHT - 4);
    points.push(`${(index * step).toFixed(1)},${y.toFixed(1)}`);
  });
  // A single point is drawn as a short level line, so that it shows.
  if (points.length === 1) points.push(`${WIDTH},${points[0].split(",")[1]}`);
  return el("svg", {
    class: `spark ${className}`.trim(), viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: "none", role: "img", "aria-label": label,
  }, el("polyline", { points: points.join(" ") }), el("title", { text: label }));
}
