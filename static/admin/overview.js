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

  function draw(id, key, label) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels: data.days.map((day) => day.slice(5)),
        datasets: data.flows.map((flow) => ({ label: flow.slug, data: flow[key], tension: 0.2, pointRadius: 2 })),
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
