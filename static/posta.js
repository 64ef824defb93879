// Progressive enhancement only: every page works without this file.
document.addEventListener("DOMContentLoaded", () => {
  // Comment / Email tabs switch in place instead of reloading the task page.
  document.querySelectorAll("[data-tabs]").forEach((tabs) => {
    tabs.querySelectorAll("[data-tab]").forEach((tab) => {
      tab.addEventListener("click", (event) => {
        event.preventDefault();
        const name = tab.dataset.tab;
        tabs.querySelectorAll("[data-tab]").forEach((t) =>
          t.classList.toggle("active", t === tab));
        document.querySelectorAll("[data-panel]").forEach((panel) => {
          panel.hidden = panel.dataset.panel !== name;
        });
      });
    });
  });
});
