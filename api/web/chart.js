// A series as inline SVG: its values over time, the limits as lines, suspect and invalid values marked.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 900, HEIGHT = 260;
const LEFT = 56, RIGHT = 210, TOP = 28, BOTTOM = 30;
const LABEL_GAP = 13; // px between the labels of lines at (nearly) one level
const SEVERITY_COLOURS = { advisory: "#1b6ca8", warning: "#a05a00", critical: "#b00020" };

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** Which of the standards' limits and the rules' thresholds a series of this interval is read
 * against: air limits by their averaging (hourly values against 1-hour limits, daily ones
 * against 24-hour and daily maximum 8-hour ones), water against the station's target class;
 * thresholds by the statistic their rule compares. */
const AVERAGINGS = { raw: ["1h"], "1h": ["1h"], "1d": ["24h", "8h"] };
const STATISTICS = {
  raw: ["instant", "mean_1h"], "1h": ["mean_1h", "instant"],
  "1d": ["day_mean", "mean_24h", "o3_max_8h", "water_day"],
};

export function linesFor(limits, interval) {
  const standard = limits.limits.filter((l) =>
    l.averaging === null ? l.target : AVERAGINGS[interval].includes(l.averaging));
  const thresholds = limits.thresholds.filter((l) => STATISTICS[interval].includes(l.statistic));
  return { standard, thresholds };
}

function ticks(low, high, count) {
  const step = (high - low) / count;
  return Array.from({ length: count + 1 }, (_, i) => low + i * step);
}

/** Round values for the value axis: steps of 1, 2, 2.5 or 5 times a power of ten. */
function valueTicks(low, high) {
  const rough = (high - low) / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const found = [];
  for (let value = Math.ceil(low / step) * step; value <= high + step * 1e-9; value += step) {
    found.push(Number(value.toPrecision(12)));
  }
  return found;
}

function short(number) {
  return Number.isInteger(number) ? String(number) : number.toPrecision(3).replace(/\.?0+$/, "");
}

/**
 * items: the API's readings or rollups (time, value, qc when raw); lines: from linesFor;
 * start, end: the Date range drawn; words: label(line), qc(name), time(Date), title.
 */
export function chart({ items, lines, start, end, unit, words }) {
  const values = items.map((i) => i.value).filter((v) => v !== null);
  const levels = [...lines.standard.map((l) => l.limit), ...lines.thresholds.map((l) => l.trigger)];
  // The scale reaches the nearest line above the values; lines further up are named, not drawn.
  const top = Math.max(...values, ...levels.filter((l) => l <= Math.max(...values, 0)), 0);
  const above = levels.filter((l) => l > top);
  let low = Math.min(0, ...values), high = above.length ? Math.min(...above) : top;
  if (high <= low) high = low + 1;
  const shown = high;
  high += (high - low) * 0.05;
  const [t0, t1] = [start.getTime(), end.getTime()];
  const x = (time) => LEFT + ((new Date(time).getTime() - t0) / (t1 - t0)) * (WIDTH - LEFT - RIGHT);
  const y = (value) => TOP + (1 - (value - low) / (high - low)) * (HEIGHT - TOP - BOTTOM);
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": words.title });
  root.append(svg("title", {}, words.title));
  for (const value of valueTicks(low, high)) {
    root.append(svg("line", { class: "grid", x1: LEFT, x2: WIDTH - RIGHT, y1: y(value), y2: y(value) }),
      svg("text", { class: "axis", x: LEFT - 6, y: y(value) + 4, "text-anchor": "end" }, short(value)));
  }
  root.append(svg("text", { class: "axis", x: 4, y: 14 }, unit));
  for (const at of ticks(t0, t1, 4)) {
    root.append(svg("text", { class: "axis", x: x(at), y: HEIGHT - 8, "text-anchor": "middle" }, words.time(new Date(at))));
  }
  let offChart = 0;
  const labelled = []; // the label heights taken, so that lines at one level keep readable labels
  const drawn = (kind, line, level, colour, label) => {
    if (level > shown) {
      root.append(svg("text", { class: "limit-label", x: LEFT + 6, y: TOP + 12 + 14 * offChart++, fill: colour, "data-limit-off": kind }, `↑ ${label}`));
      return;
    }
    let at = y(level) + 4;
    while (labelled.some((taken) => Math.abs(taken - at) < LABEL_GAP)) at += LABEL_GAP;
    labelled.push(at);
    root.append(svg("line", { class: `limit ${kind}`, x1: LEFT, x2: WIDTH - RIGHT, y1: y(level), y2: y(level), stroke: colour, "data-limit": kind }),
      svg("text", { class: "limit-label", x: WIDTH - RIGHT + 4, y: at, fill: colour }, label));
  };
  for (const line of lines.standard) drawn("standard", line, line.limit, "#333", words.label(line));
  for (const line of lines.thresholds) drawn("threshold", line, line.trigger, SEVERITY_COLOURS[line.severity], words.label(line));
  // The valid values joined, broken where a value is missing or not valid.
  let run = [];
  const flush = () => {
    if (run.length > 1) root.append(svg("polyline", { class: "series", points: run.join(" ") }));
    run = [];
  };
  for (const item of items) {
    const usable = item.value !== null && (item.qc ?? "valid") === "valid";
    if (usable) run.push(`${x(item.time)},${y(item.value)}`); else flush();
  }
  flush();
  for (const item of items) {
    const qc = item.qc ?? "valid";
    const when = words.time(new Date(item.time));
    if (item.value === null) {
      // Too little data for the period: a hollow mark on the axis, so every item is drawn.
      root.append(svg("rect", { class: "point missing", x: x(item.time) - 2, y: HEIGHT - BOTTOM - 2, width: 4, height: 4, "data-point": "", "data-qc": qc },
        svg("title", {}, `${when}: ${words.missing}`)));
      continue;
    }
    const mark = qc === "valid" || qc === "below_detection" ? "point" : `point flagged qc-${qc}`;
    root.append(svg("circle", { class: mark, cx: x(item.time), cy: y(item.value), r: mark === "point" ? 2.5 : 4.5, "data-point": "", "data-qc": qc },
      svg("title", {}, `${when}: ${item.value} ${unit} (${words.qc(qc)})`)));
  }
  return root;
}
