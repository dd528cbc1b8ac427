// The portal: sign in with a token, run a report or SQL, see a table and a
// chart, download CSV. Talks only to this server's API; no external resource.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("medlake-token") || "";
let reports = [];

async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return response;
}

async function problem(response) {
  try {
    const body = await response.json();
    return body.error || response.statusText;
  } catch (_) {
    return response.statusText;
  }
}

async function signIn(candidate) {
  token = candidate;
  const response = await api("/v1/reports");
  if (!response.ok) {
    token = "";
    sessionStorage.removeItem("medlake-token");
    $("sign-in-error").textContent = response.status === 401 ? "That token is not valid." : await problem(response);
    return;
  }
  sessionStorage.setItem("medlake-token", token);
  reports = (await response.json()).reports;
  $("sign-in").hidden = true;
  $("portal").hidden = false;
  $("sign-out").hidden = false;
  const select = $("report");
  select.replaceChildren(...reports.map((r) => new Option(r.title, r.name)));
  showParams();
}

function current() {
  return reports.find((r) => r.name === $("report").value);
}

function showParams() {
  const report = current();
  const form = $("params");
  form.replaceChildren();
  if (!report) return;
  $("report-description").textContent = report.description || "";
  for (const param of report.params) {
    const label = document.createElement("label");
    label.textContent = param.name + (param.required ? " *" : "");
    label.htmlFor = "param-" + param.name;
    const input = document.createElement("input");
    input.id = "param-" + param.name;
    input.name = param.name;
    input.type = param.type === "date" ? "text" : param.type === "integer" ? "number" : "text";
    input.placeholder = param.default || (param.type === "date" ? "YYYY-MM-DD" : "");
    form.append(label, input);
  }
}

function params() {
  const values = {};
  for (const input of $("params").querySelectorAll("input")) {
    if (input.value.trim() !== "") values[input.name] = input.value.trim();
  }
  return values;
}

function showTable(answer) {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const column of answer.columns) {
    const th = document.createElement("th");
    th.textContent = column.name;
    head.append(th);
  }
  const body = table.createTBody();
  for (const row of answer.rows) {
    const tr = body.insertRow();
    for (const column of answer.columns) {
      const value = row[column.name];
      tr.insertCell().textContent = value === undefined || value === null ? "" : String(value);
    }
  }
  $("result").replaceChildren(table);
}

// A bar or line chart of `chart.y` against `chart.x`, as SVG.
function showChart(answer, chart) {
  const target = $("chart");
  target.replaceChildren();
  if (!chart || answer.rows.length === 0) return;
  const ns = "http://www.w3.org/2000/svg";
  const width = 720, height = 260, left = 50, bottom = 40, top = 10;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "chart");
  svg.dataset.kind = chart.type;
  const rows = answer.rows.slice(0, 200);
  const values = rows.flatMap((r) => chart.y.map((y) => Number(r[y]) || 0));
  const max = Math.max(1, ...values);
  const step = (width - left) / rows.length;
  const scale = (v) => height - bottom - (v / max) * (height - bottom - top);
  const colors = ["#1f6feb", "#d97706", "#16a34a", "#9333ea"];
  chart.y.forEach((y, series) => {
    if (chart.type === "line") {
      const path = document.createElementNS(ns, "polyline");
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", colors[series % colors.length]);
      path.setAttribute("points", rows.map((r, i) => `${left + i * step + step / 2},${scale(Number(r[y]) || 0)}`).join(" "));
      svg.append(path);
    } else {
      const barWidth = Math.max(1, step / chart.y.length - 2);
      rows.forEach((r, i) => {
        const value = Number(r[y]) || 0;
        const bar = document.createElementNS(ns, "rect");
        bar.setAttribute("class", "bar");
        bar.setAttribute("x", left + i * step + series * barWidth);
        bar.setAttribute("y", scale(value));
        bar.setAttribute("width", barWidth);
        bar.setAttribute("height", height - bottom - scale(value));
        bar.setAttribute("fill", colors[series % colors.length]);
        const title = document.createElementNS(ns, "title");
        title.textContent = `${r[chart.x]}: ${y} ${value}`;
        bar.append(title);
        svg.append(bar);
      });
    }
  });
  const axis = document.createElementNS(ns, "text");
  axis.setAttribute("x", left);
  axis.setAttribute("y", height - 10);
  axis.textContent = `${chart.x} → ${chart.y.join(", ")} (max ${max})`;
  svg.append(axis);
  target.append(svg);
}

async function run(path, body, chart) {
  $("status").textContent = "Running…";
  const response = await api(path, body);
  if (!response.ok) {
    $("status").textContent = await problem(response);
    $("result").replaceChildren();
    $("chart").replaceChildren();
    return;
  }
  const answer = await response.json();
  const shown = answer.rows.length < answer.row_count ? ` (the first ${answer.rows.length} shown; the CSV has them all)` : "";
  $("status").textContent = `${answer.row_count} rows${answer.truncated ? " (cut)" : ""}${shown} in ${answer.elapsed_ms} ms`;
  showChart(answer, chart);
  showTable(answer);
}

async function download(path, body) {
  const response = await api(path, body);
  if (!response.ok) {
    $("status").textContent = await problem(response);
    return;
  }
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || "result.csv";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  $("status").textContent = `Downloaded ${name}`;
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("token").value.trim());
});
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("medlake-token");
  location.reload();
});
$("report").addEventListener("change", showParams);
$("run").addEventListener("click", () => {
  const report = current();
  if (report) run(`/v1/reports/${report.name}`, { params: params() }, report.chart);
});
$("csv").addEventListener("click", () => {
  const report = current();
  if (report) download(`/v1/reports/${report.name}/csv`, { params: params() });
});
$("run-sql").addEventListener("click", () => run("/v1/query", { sql: $("sql").value }, null));
$("csv-sql").addEventListener("click", () => download("/v1/query.csv", { sql: $("sql").value }));
if (token) signIn(token);
