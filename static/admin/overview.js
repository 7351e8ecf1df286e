// Overview charts: conversations and conversation-minutes per day, one line per flow. The numbers come from the
// page (the same ones its tables show); Chart.js is served from our origin and styles its canvas via CSSOM.
"use strict";

(function drawOverview() {
  const source = document.getElementById("overview-data");
  if (!source || typeof window.Chart !== "function") return;
  const data = JSON.parse(source.textContent);
  const styles = getComputedStyle(document.documentElement);
  const color = styles.getPropertyValue("--fg").trim() || "#161922";
  const grid = styles.getPropertyValue("--line").trim() || "#cfd3df";
  window.Chart.defaults.color = color;
  window.Chart.defaults.borderColor = grid;
  window.Chart.defaults.font.family = styles.fontFamily;
  // Told apart by color and by point shape, readable on the light and the dark background alike.
  const palette = ["#3b6cf6", "#e0702b", "#1f9d6b", "#c2408f", "#8a63d2", "#b08a00"];
  const shapes = ["circle", "rect", "triangle", "rectRot", "star", "crossRot"];

  function draw(id, key, label) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels: data.days.map((day) => day.slice(5)),
        datasets: data.flows.map((flow, i) => ({
          label: flow.slug,
          data: flow[key],
          borderColor: palette[i % palette.length],
          backgroundColor: palette[i % palette.length],
          pointStyle: shapes[i % shapes.length],
          pointRadius: 3,
          tension: 0.2,
        })),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: { y: { beginAtZero: true, title: { display: true, text: label } } },
      },
    });
  }

  draw("chart-conversations", "conversations", "Conversations");
  draw("chart-minutes", "minutes", "Minutes");
})();
