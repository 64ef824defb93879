// Progressive enhancement of the composer's templates and signatures; without
// this file "Use template" reloads the composer filled and the server checks the
// signature against the From account.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("email-form");
  const picker = document.getElementById("template-picker");
  const choice = document.getElementById("email-template");
  if (form && picker && choice) {
    picker.addEventListener("submit", (event) => {
      if (!choice.value) return;
      event.preventDefault();
      const url = picker.dataset.fillUrl.replace(/\/0$/, "/" + choice.value);
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((response) => (response.ok ? response.json() : Promise.reject(response)))
        .then((filled) => {
          if (filled.subject) form.elements.namedItem("subject").value = filled.subject;
          form.elements.namedItem("body").value = filled.body;
        })
        .catch(() => picker.submit());
    });
  }

  // Show only the signatures of the account in From, its default first chosen.
  const from = document.getElementById("email-from");
  const signature = document.getElementById("email-signature");
  if (!from || !signature) return;
  const sync = (pickDefault) => {
    let fallback = "";
    Array.from(signature.options).forEach((option) => {
      if (!option.dataset.account) return;
      const mine = option.dataset.account === from.value;
      option.hidden = !mine;
      option.disabled = !mine;
      if (mine && option.dataset.default === "true") fallback = option.value;
    });
    const current = signature.selectedOptions[0];
    if (pickDefault || (current && current.disabled)) signature.value = fallback;
  };
  sync(false);
  from.addEventListener("change", () => sync(true));
});
