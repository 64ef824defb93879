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

// Email: "Add new" in the composer's From list opens the connect page.
document.addEventListener("DOMContentLoaded", () => {
  const from = document.getElementById("email-from");
  if (from) {
    from.addEventListener("change", () => {
      if (from.value === "add-new") window.location.href = from.dataset.addUrl;
    });
  }
  // Email: fill known server settings as soon as the address is typed.
  const form = document.getElementById("exchange-form");
  if (!form) return;
  const prefills = JSON.parse(form.dataset.prefill || "{}");
  const address = form.elements.namedItem("email");
  address.addEventListener("change", () => {
    const domain = address.value.split("@").pop().trim().toLowerCase();
    const settings = prefills[domain];
    if (!settings) return;
    Object.entries(settings).forEach(([name, value]) => {
      const input = form.elements.namedItem(name);
      if (input) input.value = value;
    });
  });
});
