// EnvLink's screen: the public API with the user's key (kept for this browser session only).
import { words } from "./i18n.js";

const KEY = "envlink.key";
const LANGUAGE = "envlink.language";
const CITIES = ["guangzhou", "dongguan"];
const SEVERITIES = ["critical", "warning", "advisory"];
// Water classes I–V and worse than V (6), one colour each; dark text where the colour is light.
const WATER_COLOURS = { 1: "#1e6fd9", 2: "#1e6fd9", 3: "#2e9d3a", 4: "#ffd400", 5: "#ff7e00", 6: "#d7191c" };

const state = { me: null, view: "overview", station: null, stream: null };
const language = () => sessionStorage.getItem(LANGUAGE) || "zh";
const t = (word) => words[language()][word] ?? word;
const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElementNS(
    ["svg", "circle", "text", "polyline"].includes(tag) ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

async function api(path, options = {}) {
  const answer = await fetch(path, {
    ...options, headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, ...options.headers },
  });
  if (answer.status === 401) { signOut(); throw new Error("unauthenticated"); }
  if (!answer.ok) throw new Error(`${path}: ${answer.status}`);
  return answer.json();
}

/** Dark text on light backgrounds (yellow, green), white on dark ones. */
function textOn(colour) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
  return 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#111" : "#fff";
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
  const [stations, rivers, alerts, ...cityAqi] = await Promise.all([
    api("/v1/stations?format=geojson"), api("/v1/rivers"), api("/v1/alerts?state=firing&limit=1000"),
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
  root.append(cities, await map(stations, rivers));
}

/** The stations and river reaches on an equirectangular projection of their bounding box. */
async function map(stations, rivers) {
  const points = [...stations.features.map((f) => f.geometry.coordinates),
    ...rivers.features.flatMap((f) => f.geometry.coordinates)];
  const lons = points.map((p) => p[0]), lats = points.map((p) => p[1]);
  const [west, east, south, north] = [Math.min(...lons), Math.max(...lons), Math.min(...lats), Math.max(...lats)];
  const scale = Math.cos(((south + north) / 2) * Math.PI / 180);
  const width = 900, pad = 40;
  const k = (width - 2 * pad) / Math.max((east - west) * scale, 1e-6);
  const height = Math.ceil((north - south) * k + 2 * pad);
  const xy = ([lon, lat]) => [pad + (lon - west) * scale * k, pad + (north - lat) * k];
  const svg = el("svg", { class: "map", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": t("map") });
  for (const reach of rivers.features) {
    svg.append(el("polyline", { class: "river", points: reach.geometry.coordinates.map((c) => xy(c).join(",")).join(" ") }));
  }
  const states = await Promise.all(stations.features.map(stationState));
  stations.features.forEach((feature, i) => {
    const [x, y] = xy(feature.geometry.coordinates);
    const { code, name, name_zh: nameZh } = feature.properties;
    const found = states[i];
    const label = `${language() === "zh" ? nameZh : name} · ${found ? found.text : t("noData")}`;
    svg.append(el("circle", { cx: x, cy: y, r: 7, fill: found ? found.colour : "#bbb", "data-station": code, tabindex: 0 }),
      el("text", { x: x + 10, y: y + 4, "data-label": code }, label));
  });
  svg.addEventListener("click", (event) => {
    const code = event.target.getAttribute("data-station");
    if (code) { state.station = code; show("station"); }
  });
  return svg;
}

async function alertsView(root) {
  const [alerts, stations] = await Promise.all([
    api("/v1/alerts?state=pending&state=firing&limit=200"), api("/v1/stations"),
  ]);
  const names = Object.fromEntries(stations.items.map((s) => [s.code, language() === "zh" ? s.name_zh : s.name]));
  const responder = state.me.roles.includes("responder");
  const table = el("table", {}, el("tr", {}, ...["severity", "where", "parameter", "state", "since", "acked"].map((w) => el("th", {}, t(w)))));
  for (const alert of alerts.items) {
    const row = el("tr", { "data-alert": alert.id },
      el("td", { class: alert.severity }, t(alert.severity)),
      el("td", {}, alert.station ? names[alert.station] ?? alert.station : t(alert.city)),
      el("td", {}, alert.parameter ?? ""), el("td", {}, t(alert.state)),
      el("td", {}, (alert.fired_at ?? alert.opened_at).slice(0, 16).replace("T", " ")),
      el("td", {}, alert.acknowledged_by.join(", ")));
    if (responder && !alert.acknowledged_by.includes(state.me.agency)) {
      const button = el("button", { type: "button", "data-ack": alert.id }, t("acknowledge"));
      button.addEventListener("click", async () => {
        await api(`/v1/alerts/${alert.id}/ack`, { method: "POST" });
        show("alerts");
      });
      row.append(el("td", {}, button));
    }
    table.append(row);
  }
  root.append(table);
  if (!state.stream) {
    const { token } = await api("/v1/stream-tokens", { method: "POST" });
    state.stream = new EventSource(`/v1/alerts/stream?token=${encodeURIComponent(token)}`);
    state.stream.addEventListener("alert_event", () => { if (state.view === "alerts") show("alerts"); });
    state.stream.addEventListener("open", () => { $("#live").hidden = false; });
    state.stream.addEventListener("error", () => { $("#live").hidden = true; });
  }
}

async function stationView(root) {
  const stations = await api("/v1/stations");
  state.station ??= stations.items[0]?.code;
  const picker = el("select", { "aria-label": t("station") });
  for (const s of stations.items) {
    const option = el("option", { value: s.code }, language() === "zh" ? s.name_zh : s.name);
    option.selected = s.code === state.station;
    picker.append(option);
  }
  picker.addEventListener("change", () => { state.station = picker.value; show("station"); });
  const latest = await api("/v1/latest");
  const table = el("table", {}, el("tr", {}, ...["parameter", "value", "age", "qc"].map((w) => el("th", {}, t(w)))));
  for (const r of latest.items.filter((item) => item.station === state.station)) {
    table.append(el("tr", { "data-parameter": r.parameter }, el("td", {}, r.parameter),
      el("td", {}, r.value === null ? "—" : `${r.value} ${r.unit}`),
      el("td", {}, `${Math.round(r.age_s / 60)} ${t("minutes")}`), el("td", {}, t(r.qc))));
  }
  root.append(picker, table);
}

const VIEWS = { overview, alerts: alertsView, station: stationView };

async function show(view) {
  state.view = view;
  const root = el("section", { "data-view": view });
  await VIEWS[view](root);
  if (state.view === view) $("#view").replaceChildren(root);
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
translate();
if (sessionStorage.getItem(KEY)) signIn();
