// EnvLink's screen: the public API with the user's key (kept for this browser session only).
import { words } from "./i18n.js";
import { chart, linesFor, svg } from "./chart.js";

const KEY = "envlink.key";
const LANGUAGE = "envlink.language";
const CITIES = ["guangzhou", "dongguan"];
const SEVERITIES = ["critical", "warning", "advisory"];
const AREAS = ["dongjiang", "shiziyang"];
// The chart's ranges, each with the series it shows by default (interval of /v1/readings).
const RANGES = { "1d": [1, "raw"], "7d": [7, "1h"], "30d": [30, "1h"], "1y": [365, "1d"] };
const INTERVALS = ["raw", "1h", "1d"];
const MAX_PAGES = 20; // of 10 000 readings: a year of 15-minute values fits
const FIRST_VIEW = "envlink:first-view"; // a performance mark, for the first view drawn
const REFRESH_MS = 60_000; // the situation view also refreshes on every alert event
const STATE_COLOURS = { reporting: "#2e9d3a", late: "#ffd400", silent: "#d7191c", maintenance: "#666666" };
const TRENDS = { rising: "↑", falling: "↓", steady: "→", unknown: "?" };
// Water classes I–V and worse than V (6), one colour each; dark text where the colour is light.
const WATER_COLOURS = { 1: "#1e6fd9", 2: "#1e6fd9", 3: "#2e9d3a", 4: "#ffd400", 5: "#ff7e00", 6: "#d7191c" };

const state = {
  me: null, view: "overview", station: null, stream: null, area: "dongjiang",
  chart: { parameter: null, range: "1d", interval: "raw" }, silencing: null, month: null,
};
const language = () => sessionStorage.getItem(LANGUAGE) || "zh";
const t = (word) => words[language()][word] ?? word;
const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  if (["svg", "circle", "text", "polyline", "line", "image"].includes(tag)) return svg(tag, attributes, ...children);
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

const named = (thing) => (language() === "zh" ? thing.name_zh : thing.name);
/** An API time (+08:00) as "MM-DD hh:mm", Asia/Shanghai as the API gives it. */
const clock = (iso) => (iso ? iso.slice(5, 16).replace("T", " ") : "—");
const can = (...roles) => roles.some((role) => state.me.roles.includes(role));

async function api(path, options = {}) {
  const answer = await fetch(path, {
    ...options, headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, ...options.headers },
  });
  if (answer.status === 401) { signOut(); throw new Error("unauthenticated"); }
  if (!answer.ok) throw new Error(`${path}: ${answer.status}`);
  return answer.json();
}

/** WCAG relative luminance of "#rrggbb". */
function luminance(colour) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16) / 255)
    .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** The text colour with the higher WCAG contrast: dark on yellow, green or orange, white on dark ones. */
function textOn(colour) {
  const light = luminance(colour);
  return (light + 0.05) / (luminance("#111111") + 0.05) >= 1.05 / (light + 0.05) ? "#111" : "#fff";
}

function swatch(colour, text) {
  return el("span", { class: "swatch", style: `background:${colour};color:${textOn(colour)}` }, text);
}

function aqiText(aqi) {
  if (aqi.aqi === null) return t("noData");
  return `AQI ${aqi.aqi} ${language() === "zh" ? aqi.category_zh : aqi.category}`;
}

const ROMAN = ["", "I", "II", "III", "IV", "V", language() === "zh" ? "劣V" : "worse than V"];

/** A station's state: AQI for air, the water class for water; null when none can be had. */
async function stationState(feature) {
  const { code, medium } = feature.properties;
  try {
    if (medium === "air") {
      const aqi = await api(`/v1/aqi?station=${encodeURIComponent(code)}`);
      return aqi.aqi === null ? null : { colour: aqi.color, text: aqiText(aqi) };
    }
    const water = await api(`/v1/water-quality?station=${encodeURIComponent(code)}`);
    if (water.overall_class === null) return null;
    return { colour: WATER_COLOURS[water.overall_class], text: `${ROMAN[water.overall_class]} ${t("waterClass")}` };
  } catch { return null; }
}

async function overview(root) {
  const [stations, rivers, alerts, sources, ...cityAqi] = await Promise.all([
    api("/v1/stations?format=geojson"), api("/v1/rivers"), api("/v1/alerts?state=firing&limit=1000"),
    api("/v1/sources").catch(() => null),
    ...CITIES.map((city) => api(`/v1/aqi?city=${city}`).catch(() => null)),
  ]);
  const cities = el("section", { class: "cities" });
  CITIES.forEach((city, i) => {
    const aqi = cityAqi[i];
    cities.append(el("div", { class: "card", "data-city": city }, el("h2", {}, `${t(city)} ${t("cityAqi")}`),
      aqi && aqi.aqi !== null ? swatch(aqi.color, aqiText(aqi)) : t("noData")));
  });
  const counts = el("div", { class: "card", "data-alert-counts": "" }, el("h2", {}, t("activeAlerts")));
  for (const severity of SEVERITIES) {
    const n = alerts.items.filter((a) => a.severity === severity).length;
    counts.append(el("div", { class: severity, "data-severity": severity }, `${t(severity)}: ${n}`));
  }
  cities.append(counts);
  if (sources) cities.append(sourcesCard(sources));
  root.append(cities, await map(stations, rivers));
}

/** How many sources deliver, fail or have delivered nothing yet; the failing ones named. */
function sourcesCard(sources) {
  const card = el("div", { class: "card", "data-sources-health": "" }, el("h2", {}, t("sources")));
  for (const condition of ["healthy", "failing", "never"]) {
    const codes = sources.items.filter((s) => health(s) === condition).map((s) => s.code);
    const line = el("div", { class: condition === "failing" && codes.length ? "failing" : "", "data-health": condition },
      `${t(condition)}: ${codes.length}`);
    if (condition !== "healthy" && codes.length) line.append(` (${codes.join(", ")})`);
    card.append(line);
  }
  return card;
}

/** The site's tile server (ENVLINK_MAP_TILE_URL, named by the page's meta element), or null. */
const tileUrl = () => document.querySelector('meta[name="envlink-map-tiles"]')?.content || null;
const TILE = 256; // px, Web Mercator tiles

/** A point in Web Mercator, in pixels of the whole world at zoom 0. */
function mercator([lon, lat]) {
  const sin = Math.sin((lat * Math.PI) / 180);
  return [((lon + 180) / 360) * TILE, (0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * TILE];
}

/** The tiles under the drawing, at the zoom nearest its scale (`k` drawing px per zoom-0 px). */
function tiles(template, [minX, minY], k, width, height, pad) {
  const z = Math.max(0, Math.min(19, Math.round(Math.log2(k))));
  const n = 2 ** z, size = (TILE * k) / n;
  const span = (low, extent) => [Math.floor(((low - pad / k) * n) / TILE), Math.floor(((low + (extent - pad) / k) * n) / TILE)];
  const [x0, x1] = span(minX, width), [y0, y1] = span(minY, height);
  const drawn = [];
  for (let y = Math.max(0, y0); y <= Math.min(n - 1, y1); y += 1) {
    for (let x = x0; x <= x1; x += 1) {
      const wrapped = ((x % n) + n) % n;
      const href = template.replace("{z}", z).replace("{x}", wrapped).replace("{y}", y);
      drawn.push(el("image", {
        href, x: pad + ((x * TILE) / n - minX) * k, y: pad + ((y * TILE) / n - minY) * k,
        width: size, height: size, preserveAspectRatio: "none", "aria-hidden": "true", "data-tile": `${z}/${wrapped}/${y}`,
      }));
    }
  }
  return drawn;
}

/** The stations and river reaches over their bounding box: on the site's map tiles (Web
 * Mercator) if it has a tile server, else on an equirectangular projection. */
async function map(stations, rivers) {
  const points = [...stations.features.map((f) => f.geometry.coordinates),
    ...rivers.features.flatMap((f) => f.geometry.coordinates)];
  const template = tileUrl();
  const lats = points.map((p) => p[1]);
  const scale = Math.cos(((Math.min(...lats) + Math.max(...lats)) / 2) * Math.PI / 180);
  const project = template ? mercator : ([lon, lat]) => [lon * scale, -lat];
  const projected = points.map(project);
  const xs = projected.map((p) => p[0]), ys = projected.map((p) => p[1]);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const width = 900, pad = 40;
  const k = (width - 2 * pad) / Math.max(maxX - minX, 1e-9);
  const height = Math.ceil((maxY - minY) * k + 2 * pad);
  const xy = (point) => { const [x, y] = project(point); return [pad + (x - minX) * k, pad + (y - minY) * k]; };
  // A group, not an image: an image's children are hidden from assistive technology, and each
  // station in it is a button with a name of its own.
  const drawing = el("svg", { class: "map", viewBox: `0 0 ${width} ${height}`, role: "group", "aria-label": t("map") });
  if (template) drawing.append(...tiles(template, [minX, minY], k, width, height, pad));
  for (const reach of rivers.features) {
    drawing.append(el("polyline", { class: "river", "aria-hidden": "true", points: reach.geometry.coordinates.map((c) => xy(c).join(",")).join(" ") }));
  }
  const states = await Promise.all(stations.features.map(stationState));
  stations.features.forEach((feature, i) => {
    const [x, y] = xy(feature.geometry.coordinates);
    const { code, name, name_zh: nameZh } = feature.properties;
    const found = states[i];
    const shown = language() === "zh" ? nameZh : name, level = found ? found.text : t("noData");
    // The button's name says what its label and colour show, with the station's code; the label
    // itself is not read a second time.
    drawing.append(el("circle", {
      cx: x, cy: y, r: 7, fill: found ? found.colour : "#bbb", "data-station": code, tabindex: 0, role: "button",
      "aria-label": `${shown} (${code}) · ${level}`,
    }), el("text", { x: x + 10, y: y + 4, "data-label": code, "aria-hidden": "true" }, `${shown} · ${level}`));
  });
  const open = (event) => {
    const code = event.target.getAttribute("data-station");
    if (code) { event.preventDefault(); state.station = code; show("station"); }
  };
  drawing.addEventListener("click", open);
  drawing.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") open(event); });
  return drawing;
}

async function alertsView(root) {
  const silencer = can("responder", "admin");
  const [alerts, stations, silences] = await Promise.all([
    api("/v1/alerts?state=pending&state=firing&limit=200"), api("/v1/stations"),
    silencer ? api("/v1/silences") : { items: [] },
  ]);
  const names = Object.fromEntries(stations.items.map((s) => [s.code, named(s)]));
  const responder = can("responder");
  const columns = ["severity", "where", "parameter", "state", "since", "acked",
    ...(responder ? ["acknowledge"] : []), ...(silencer ? ["silence"] : [])];
  const body = el("tbody");
  const table = el("table", { class: "board" },
    el("thead", {}, el("tr", {}, ...columns.map((w) => el("th", { scope: "col" }, t(w))))), body);
  for (const alert of alerts.items) {
    const acknowledged = alert.acknowledged_by.includes(state.me.agency);
    const row = el("tr", { "data-alert": alert.id },
      el("td", { class: alert.severity }, t(alert.severity)),
      el("td", {}, alert.station ? names[alert.station] ?? alert.station : t(alert.city ?? "region")),
      el("td", {}, alert.parameter ?? ""), el("td", {}, t(alert.state)),
      el("td", {}, clock(alert.fired_at ?? alert.opened_at)),
      el("td", {}, alert.acknowledged_by.join(", ")));
    if (responder) row.append(el("td", {}, acknowledged ? "" : ackButton(alert)));
    if (silencer) row.append(el("td", {}, silenceCell(alert, silences.items)));
    body.append(row);
    if (state.silencing === alert.id) body.append(silenceForm(alert));
  }
  root.append(table);
}

function ackButton(alert) {
  const button = el("button", { type: "button", "data-ack": alert.id }, t("acknowledge"));
  button.addEventListener("click", async () => {
    await api(`/v1/alerts/${alert.id}/ack`, { method: "POST" });
    show("alerts");
  });
  return button;
}

/** Whether a silence of the key's agency in force mutes this alert's messages. */
function mutes(silence, alert) {
  return silence.active && (silence.rules === null || silence.rules.includes(alert.rule_id))
    && (silence.stations === null || silence.stations.includes(alert.station))
    && (silence.areas === null || silence.areas.includes(alert.area))
    && (silence.severities === null || silence.severities.includes(alert.severity));
}

function silenceCell(alert, silences) {
  const muting = silences.filter((s) => mutes(s, alert));
  if (muting.length) {
    const until = muting.map((s) => s.ends_at).sort().at(-1);
    return el("span", { "data-silenced": alert.id }, `${t("silencedUntil")} ${clock(until)}`);
  }
  const button = el("button", { type: "button", "data-silence": alert.id }, t("silence"));
  button.addEventListener("click", () => { state.silencing = alert.id; show("alerts"); });
  return button;
}

/** Mute the messages of the alert's rule at its station (or its city-wide rule) for a while. */
function silenceForm(alert) {
  const hours = el("select", { name: "hours", "aria-label": t("silenceFor") },
    ...[1, 4, 12, 24].map((n) => el("option", { value: n }, `${n} ${t("hours")}`)));
  const comment = el("input", { name: "comment", required: "", maxlength: 2000, "aria-label": t("comment") });
  const error = el("span", { role: "alert", class: "error" });
  const cancel = el("button", { type: "button" }, t("cancel"));
  cancel.addEventListener("click", () => { state.silencing = null; show("alerts"); });
  const form = el("form", { "data-silence-form": alert.id },
    el("label", {}, `${t("silenceFor")} `, hours), " ",
    el("label", {}, `${t("comment")} `, comment), " ",
    el("button", { type: "submit" }, t("create")), " ", cancel, " ", error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const ends = new Date(Date.now() + Number(hours.value) * 3_600_000);
    const body = { rules: [alert.rule_id], ends_at: ends.toISOString(), comment: comment.value.trim() };
    if (alert.station) body.stations = [alert.station];
    try {
      await api("/v1/silences", {
        method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
      });
    } catch { error.textContent = t("silenceFailed"); return; }
    state.silencing = null;
    show("alerts");
  });
  return el("tr", {}, el("td", { colspan: 9 }, form));
}

/** The alert stream (SSE, with a stream token): the alerts and situation views follow it. */
async function listen() {
  if (state.stream) return;
  const { token } = await api("/v1/stream-tokens", { method: "POST" });
  if (!state.me || state.stream) return;
  state.stream = new EventSource(`/v1/alerts/stream?token=${encodeURIComponent(token)}`);
  state.stream.addEventListener("alert_event", () => {
    if (state.view === "alerts" && state.silencing === null) show("alerts");
    if (state.view === "situation") show("situation");
  });
  state.stream.addEventListener("open", () => { $("#live").hidden = false; });
  state.stream.addEventListener("error", () => { $("#live").hidden = true; });
}

function picker(label, values, chosen, text, change, hook) {
  const select = el("select", { "aria-label": label, [hook]: "" });
  for (const value of values) {
    const option = el("option", { value }, text(value));
    option.selected = value === chosen;
    select.append(option);
  }
  select.addEventListener("change", () => change(select.value));
  return select;
}

async function stationView(root) {
  const [stations, latest] = await Promise.all([api("/v1/stations"), api("/v1/latest")]);
  state.station ??= stations.items[0]?.code;
  const names = Object.fromEntries(stations.items.map((s) => [s.code, named(s)]));
  const choose = picker(t("station"), stations.items.map((s) => s.code), state.station, (c) => names[c],
    (code) => { state.station = code; state.chart.parameter = null; show("station"); }, "data-station-picker");
  const rows = latest.items.filter((item) => item.station === state.station);
  const table = el("table", {}, el("tr", {}, ...["parameter", "value", "age", "qc"].map((w) => el("th", {}, t(w)))));
  for (const r of rows) {
    table.append(el("tr", { "data-parameter": r.parameter }, el("td", {}, r.parameter),
      el("td", {}, r.value === null ? "—" : `${r.value} ${r.unit}`),
      el("td", {}, `${Math.round(r.age_s / 60)} ${t("minutes")}`), el("td", {}, t(r.qc))));
  }
  root.append(choose, table);
  const parameters = rows.map((r) => r.parameter);
  if (!parameters.includes(state.chart.parameter)) state.chart.parameter = parameters[0] ?? null;
  if (state.chart.parameter) root.append(await chartSection(state.station, parameters));
}

/** Every page of a series in [start, now). */
async function series(station, parameter, interval, start) {
  const query = new URLSearchParams({ station, parameter, interval, start: start.toISOString(), limit: 10000 });
  const items = [];
  for (let page = 0; page < MAX_PAGES; page++) {
    const answer = await api(`/v1/readings?${query}`);
    items.push(...answer.items);
    if (!answer.next_cursor) break;
    query.set("cursor", answer.next_cursor);
  }
  return items;
}

function limitLabel(line) {
  const sign = { "<=": "≤", ">=": "≥", ">": ">" };
  if ("trigger" in line) {
    return `${t(line.severity)} ${t("threshold")} ${line.direction === "above" ? ">" : "<"} ${line.trigger}`;
  }
  const level = line.averaging ? t(`avg_${line.averaging}`) : t("waterClassOf").replace("{}", line.level);
  return `${line.standard.split(" (")[0]} ${level} ${sign[line.comparison]} ${line.limit}`;
}

async function chartSection(station, parameters) {
  const { parameter, range, interval } = state.chart;
  const redraw = (change) => { Object.assign(state.chart, change); show("station"); };
  const end = new Date();
  const start = new Date(end.getTime() - RANGES[range][0] * 86_400_000);
  const [items, limits] = await Promise.all([
    series(station, parameter, interval, start),
    api(`/v1/limits?${new URLSearchParams({ station, parameter })}`),
  ]);
  const controls = el("div", { class: "controls" },
    picker(t("parameter"), parameters, parameter, (p) => p, (p) => redraw({ parameter: p }), "data-chart-parameter"),
    picker(t("range"), Object.keys(RANGES), range, (r) => t(`range_${r}`),
      (r) => redraw({ range: r, interval: RANGES[r][1] }), "data-chart-range"),
    picker(t("interval"), INTERVALS, interval, (i) => t(`interval_${i}`), (i) => redraw({ interval: i }), "data-chart-interval"));
  const words = {
    title: `${parameter} · ${t(`interval_${interval}`)} · ${t(`range_${range}`)}`,
    label: limitLabel, qc: (qc) => t(qc), missing: t("insufficient"),
    time: (at) => at.toLocaleString(language() === "zh" ? "zh-CN" : "en-GB",
      { timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }),
  };
  const drawing = chart({ items, lines: linesFor(limits, interval), start, end, unit: limits.unit, words });
  const flagged = items.filter((i) => i.qc && !["valid", "below_detection"].includes(i.qc)).length;
  return el("section", { class: "card", "data-chart": `${parameter}:${interval}` }, controls, drawing,
    el("p", { class: "legend" }, `${items.length} ${t("points")} · ${t("flaggedMarked")}: ${flagged} · ${t("linesAre")}`));
}

async function situationView(root) {
  const area = state.area;
  const found = await api(`/v1/situation?area=${area}`);
  const choose = picker(t("area"), AREAS, area, (a) => t(a), (a) => { state.area = a; show("situation"); }, "data-area");
  const time = el("p", {}, `${t("updated")} ${clock(found.generated_at)}`);
  const water = found.stations.filter((s) => s.medium === "water");
  root.append(choose, time, river(water, found.arrivals), stationList(found.stations), arrivalTable(found));
}

/** The river as a line, upstream to downstream, each water station on it with its state. */
function river(stations, arrivals) {
  const width = 1000, pad = 110, axis = 70, step = (width - 2 * pad) / Math.max(stations.length - 1, 1);
  const drawing = svg("svg", { class: "river", viewBox: `0 0 ${width} 190`, role: "img", "aria-label": t("riverSchematic") },
    svg("line", { x1: pad - 40, x2: width - pad + 40, y1: axis, y2: axis, class: "flow" }),
    svg("text", { x: 10, y: 18 }, t("upstream")), svg("text", { x: width - 10, y: 18, "text-anchor": "end" }, t("downstream")));
  stations.forEach((s, i) => {
    const x = pad + i * step, below = axis + 30 + (i % 2) * 44; // every other label lower
    const arriving = arrivals.filter((a) => a.station === s.code);
    drawing.append(svg("circle", { cx: x, cy: axis, r: 9, fill: STATE_COLOURS[s.state], "data-river-station": s.code, "data-state": s.state }),
      svg("text", { x, y: below, "text-anchor": "middle" }, named(s)),
      svg("text", { x, y: below + 17, "text-anchor": "middle" }, t(s.state)));
    if (arriving.length) {
      const eta = arriving.map((a) => a.eta).sort()[0];
      drawing.append(svg("text", { x, y: axis - 18 - (i % 2) * 16, "text-anchor": "middle", class: "eta" }, `${t("eta")} ${clock(eta)}`));
    }
  });
  return drawing;
}

function stationList(stations) {
  const list = el("ol", { class: "stations" });
  for (const s of stations) {
    const trends = s.series.filter((x) => x.trend.direction !== "unknown")
      .map((x) => `${x.parameter}${TRENDS[x.trend.direction]}`).join(" ");
    const quality = s.aqi?.aqi != null ? `AQI ${s.aqi.aqi}`
      : s.water_class?.overall_class != null ? `${ROMAN[s.water_class.overall_class]} ${t("waterClass")}` : t("noData");
    list.append(el("li", { "data-station": s.code, "data-state": s.state },
      swatch(STATE_COLOURS[s.state], t(s.state)), ` ${named(s)} · ${quality}`,
      trends ? ` · ${t("trends")}: ${trends}` : ""));
  }
  return list;
}

function arrivalTable(found) {
  const section = el("section", {}, el("h2", {}, t("arrivals")));
  if (!found.arrivals.length) { section.append(el("p", {}, t("noArrivals"))); return section; }
  const names = Object.fromEntries(found.stations.map((s) => [s.code, named(s)]));
  const table = el("table", {}, el("tr", {}, ...["from", "to", "etaColumn", "hoursAway", "distance"].map((w) => el("th", {}, t(w)))));
  for (const a of found.arrivals) {
    table.append(el("tr", { "data-arrival": a.alert_id },
      el("td", {}, names[a.from_station] ?? a.from_station), el("td", {}, names[a.station] ?? a.station),
      el("td", {}, clock(a.eta)), el("td", {}, String(a.hours)), el("td", {}, `${a.distance_km} km`)));
  }
  section.append(table);
  return section;
}

/** Ingest health: a source failing since its last success, never delivering, or healthy. */
function health(source) {
  if (source.last_error_at && (!source.last_success_at || source.last_error_at > source.last_success_at)) return "failing";
  return source.last_success_at ? "healthy" : "never";
}

async function sourcesView(root) {
  const sources = await api("/v1/sources");
  const columns = ["source", "kind", "health", "lastSuccess", "lag", "accepted", "duplicate", "revised", "rejected", "lastError"];
  const table = el("table", {}, el("tr", {}, ...columns.map((w) => el("th", {}, t(w)))));
  for (const s of sources.items) {
    const condition = health(s);
    table.append(el("tr", { "data-source": s.code, "data-health": condition },
      el("td", {}, s.code), el("td", {}, s.kind), el("td", { class: condition }, t(condition)),
      el("td", {}, clock(s.last_success_at)),
      el("td", {}, s.lag_s === null ? "—" : `${Math.round(s.lag_s / 60)} ${t("minutes")}`),
      ...[s.accepted, s.duplicate, s.revised, s.rejected].map((n) => el("td", {}, String(n))),
      el("td", {}, s.last_error ? `${clock(s.last_error_at)} ${s.last_error}` : "—")));
  }
  const { leader, jobs } = sources.scheduler;
  const scheduler = el("table", {}, el("tr", {}, ...["job", "runs", "failures", "lastSuccess", "nextRun"].map((w) => el("th", {}, t(w)))));
  for (const j of jobs) {
    scheduler.append(el("tr", { "data-job": j.id }, el("td", {}, j.id), el("td", {}, String(j.runs)),
      el("td", {}, String(j.failures)), el("td", {}, clock(j.last_success_at)), el("td", {}, clock(j.next_run_at))));
  }
  root.append(table, el("h2", {}, t("scheduler")),
    el("p", {}, `${t("leader")}: ${leader ? `${leader.owner} (${clock(leader.elected_at)})` : t("noLeader")}`), scheduler);
}


/** Last month in Asia/Shanghai, as YYYY-MM. */
function lastMonth() {
  const now = new Date(Date.now() + 8 * 3_600_000);
  const year = now.getUTCFullYear(), month = now.getUTCMonth(); // 0-based: last month's 1-based number
  return month === 0 ? `${year - 1}-12` : `${year}-${String(month).padStart(2, "0")}`;
}

/** A bulletin figure: a number, "—", or the shortfall of data it had. */
function figure(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return `${t("insufficient")} (${value.have}/${value.need})`;
  return String(value);
}

const signed = (value) => (value === null || value === undefined ? "—" : `${value > 0 ? "+" : ""}${value}`);
const classLabel = (label) => ({ 劣V: t("worseThanV"), 劣四类: t("worseThanIV") })[label] ?? label ?? "—";
const CATEGORIES = ["excellent", "good", "lightly_polluted", "moderately_polluted", "heavily_polluted", "severely_polluted"];
const DOWNLOADS = { html: "html", csv: "zip", json: "json" };

/** A table with a caption, column headers and rows of cells (each row: [attributes, cells]). */
function captioned(caption, columns, rows) {
  const head = el("tr", {}, ...columns.map((w) => el("th", { scope: "col" }, t(w))));
  const body = rows.map(([attributes, cells]) => el("tr", attributes, ...cells.map((c) => el("td", {}, c))));
  return el("table", {}, el("caption", {}, t(caption)), el("thead", {}, head), el("tbody", {}, ...body));
}

/** Fetch a bulletin file with the key (a header, so no bare link) and hand it to the browser. */
async function download(month, format) {
  const query = new URLSearchParams({ month, format, lang: language() });
  const answer = await fetch(`/v1/reports/bulletin?${query}`, {
    headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` },
  });
  if (!answer.ok) throw new Error(`bulletin ${format}: ${answer.status}`);
  const link = el("a", { href: URL.createObjectURL(await answer.blob()), download: `envlink-bulletin-${month}.${DOWNLOADS[format]}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

async function bulletinView(root) {
  state.month ??= lastMonth();
  const month = state.month;
  const chooser = el("input", { type: "month", id: "bulletin-month", value: month, max: lastMonth(), "data-bulletin-month": "" });
  chooser.addEventListener("change", () => { if (chooser.value) { state.month = chooser.value; show("bulletin"); } });
  const status = el("span", { role: "status", class: "error" });
  const buttons = Object.keys(DOWNLOADS).map((format) => {
    const button = el("button", { type: "button", "data-download": format }, t(`download_${format}`));
    button.addEventListener("click", () => download(month, format).then(
      () => { status.textContent = ""; }, () => { status.textContent = t("downloadFailed"); }));
    return button;
  });
  root.append(el("div", { class: "controls" }, el("label", { for: "bulletin-month" }, t("month")), chooser, ...buttons, status));
  let found;
  try {
    found = await api(`/v1/reports/bulletin?month=${month}`);
  } catch {
    root.append(el("p", { class: "error", role: "alert" }, t("bulletinFailed")));
    return;
  }
  root.append(el("h2", {}, `${t("bulletinTitle")} ${found.month}`),
    el("p", {}, `${t(found.notes.data_status)} · ${t("generated")} ${clock(found.generated_at)}`),
    ...bulletinTables(found));
}

function bulletinTables(found) {
  const air = found.air.map((u) => [{ "data-unit": u.unit }, [named(u), String(u.this_period.valid_days),
    ...CATEGORIES.map((c) => String(u.this_period.category_days[c] ?? 0)), String(u.this_period.exceedance_days)]]);
  const pollutants = found.air.flatMap((u) => u.pollutants.map((p) => [{ "data-pollutant": `${u.unit}:${p.pollutant}` },
    [named(u), p.pollutant, t(`stat_${p.statistic}`), `${figure(p.value)} ${p.unit}`, figure(p.last_year),
      signed(p.change_percent), p.limit === null ? "—" : String(p.limit)]]));
  const water = found.water;
  return [
    captioned("summary", ["unit", "goodDayShare", "lastYear", "changePoints", "compositeIndex", "lastYear", "changePercent"],
      found.summary.map((r) => [{ "data-summary": r.unit }, [named(r), figure(r.good_day_share),
        figure(r.good_day_share_last_year), signed(r.good_day_share_change_points), figure(r.composite_index),
        figure(r.composite_index_last_year), signed(r.composite_index_change_percent)]])),
    captioned("airDays", ["unit", "validDays", ...CATEGORIES, "exceedanceDays"], air),
    captioned("pollutants", ["unit", "parameter", "statistic", "value", "lastYear", "changePercent", "limit"], pollutants),
    captioned("ranking", ["rank", "station", "compositeIndex", "primary", "goodDayShare"],
      found.stations.map((s) => [{ "data-rank": s.code }, [s.rank === null ? "—" : String(s.rank), named(s),
        figure(s.composite_index), s.composite_index_primary.join(", ") || "—", figure(s.good_day_share)]])),
    captioned("sections", ["section", "target", "waterClassColumn", "lastYear", "compliant", "exceedances"],
      water.sections.map((s) => [{ "data-section": s.code }, [named(s), classLabel(s.target_label),
        classLabel(s.class_label), classLabel(s.last_year_class_label),
        s.compliant === null ? "—" : t(s.compliant ? "yes" : "no"), exceedances(s.exceedances)]])),
    captioned("waterGroups", ["name", "sectionCount", "goodShare", "worseShare", "compliantShare", "grade"],
      [...water.rivers, ...water.cities].map((g) => [{ "data-group": `${g.kind}:${g.code}` }, [named(g),
        String(g.sections), figure(g.good_share), figure(g.worse_than_v_share), figure(g.compliant_share),
        (language() === "zh" ? g.grade_zh : g.grade) ?? "—"]])),
    el("p", { class: "legend" }, `${t("ruleSets")}: ${[...new Set(found.notes.rule_sets)].join(", ")}`),
  ];
}

/** "氨氮 (0.24)" in Chinese, the item's code in English. */
function exceedances(items) {
  if (!items.length) return "—";
  return items.map((e) => `${language() === "zh" ? e.name_zh : e.item}${e.multiple === null ? "" : ` (${e.multiple})`}`).join(", ");
}

const VIEWS = {
  overview, alerts: alertsView, station: stationView, situation: situationView, bulletin: bulletinView,
  sources: sourcesView,
};

async function show(view) {
  state.view = view;
  const root = el("section", { "data-view": view });
  await VIEWS[view](root);
  if (state.view !== view) return;
  $("#view").replaceChildren(root);
  scrollables();
  if (!performance.getEntriesByName(FIRST_VIEW).length) performance.mark(FIRST_VIEW);
}

/** A table wider than the screen scrolls sideways within itself (a phone): it takes the
 * keyboard's focus then, so that the arrow keys scroll it, and only then. */
function scrollables() {
  for (const table of document.querySelectorAll("main table")) {
    if (table.scrollWidth > table.clientWidth + 1) table.tabIndex = 0;
    else table.removeAttribute("tabindex");
  }
}

function translate() {
  document.documentElement.lang = language() === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  $("#language").textContent = language() === "zh" ? "English" : "中文";
  ROMAN[6] = language() === "zh" ? "劣V" : "worse than V";
}

function signOut() {
  sessionStorage.removeItem(KEY);
  state.me = null;
  state.stream?.close();
  state.stream = null;
  state.silencing = null;
  $("#live").hidden = true;
  $("#sign-in").hidden = false;
  $("nav").hidden = $("#sign-out").hidden = true;
  $("#who").textContent = "";
  $("#view").replaceChildren();
}

async function signIn() {
  try {
    state.me = await api("/v1/me");
  } catch {
    $("#sign-in-error").textContent = t("badKey");
    return;
  }
  $("#sign-in-error").textContent = "";
  $("#sign-in").hidden = true;
  $("nav").hidden = $("#sign-out").hidden = false;
  $("#who").textContent = `${state.me.agency} (${state.me.roles.join(", ")})`;
  listen();
  await show(state.view);
}

$("#sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, event.target.elements["api-key"].value.trim());
  signIn();
});
$("#sign-out").addEventListener("click", signOut);
$("#language").addEventListener("click", () => {
  sessionStorage.setItem(LANGUAGE, language() === "zh" ? "en" : "zh");
  translate();
  if (state.me) show(state.view);
});
for (const button of document.querySelectorAll("[data-go]")) {
  button.addEventListener("click", () => show(button.dataset.go));
}
window.addEventListener("resize", scrollables);
setInterval(() => { if (state.me && state.view === "situation") show("situation"); }, REFRESH_MS);
translate();
if (sessionStorage.getItem(KEY)) signIn();
