/// The status page's script and style sheet, served by this process
/// (/status.js, /status.css): the page loads nothing from elsewhere.
extension StatusPage {
    /// Polls /status.json every second and redraws the table's body. It
    /// builds cells with textContent only (never HTML from data), and says
    /// on the page whether it is live. Without it the page is the same
    /// table, as of the last load.
    static let script = #"""
        "use strict";
        (function () {
          const fields = ["name", "device", "endpoint", "state", "since", "rate_in", "rate_out",
                          "bytes_in", "bytes_out", "transfers_in", "transfers_out", "last_error"];
          const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
          function rate(v) {
            if (v === null || v === undefined) return "-";
            let unit = 0;
            while (v >= 1024 && unit < units.length - 1) { v /= 1024; unit += 1; }
            return unit === 0 ? Math.round(v) + " B/s" : v.toFixed(1) + " " + units[unit];
          }
          function grouped(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
          function cell(s, field) {
            const td = document.createElement("td");
            td.dataset.field = field;
            let text = s[field];
            if (field === "device") text = s.device === null ? "none" : s.device;
            if (field === "endpoint") text = s.endpoint + (s.address ? " (" + s.address + ")" : "");
            if (field === "last_error") text = s.last_error === null ? "" : s.last_error;
            if (field === "rate_in" || field === "rate_out") {
              if (s[field] !== null) td.dataset.value = String(Math.floor(s[field]));
              text = rate(s[field]);
            }
            if (field.startsWith("bytes_") || field.startsWith("transfers_")) {
              td.dataset.value = String(s[field]);
              text = grouped(s[field]);
            }
            td.textContent = text;
            return td;
          }
          function draw(model) {
            const body = document.createElement("tbody");
            for (const s of model.sessions) {
              const tr = document.createElement("tr");
              tr.className = "state-" + s.state;
              for (const f of fields) tr.appendChild(cell(s, f));
              body.appendChild(tr);
            }
            const table = document.getElementById("sessions");
            table.replaceChild(body, table.tBodies[0]);
            document.getElementById("generated").textContent = model.generated;
          }
          async function poll() {
            const live = document.getElementById("live");
            try {
              const response = await fetch("/status.json", { cache: "no-store" });
              if (!response.ok) throw new Error("HTTP " + response.status);
              draw(await response.json());
              live.textContent = "Live: updated every second.";
              document.body.dataset.live = "yes";
            } catch (e) {
              live.textContent = "Not updating (" + e.message + "); retrying.";
              document.body.dataset.live = "no";
            }
            setTimeout(poll, 1000);
          }
          poll();
        })();
        """#

    static let style = """
        body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; background: #fff; }
        h1 { font-size: 1.3em; margin: 0 0 .2em; }
        table { border-collapse: collapse; width: 100%; }
        th, td { border-bottom: 1px solid #ddd; padding: .35em .6em; text-align: left; vertical-align: top; }
        th { background: #f3f3f3; font-weight: 600; }
        td[data-value] { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
        td[data-field="state"] { font-weight: 600; }
        tr.state-connected td[data-field="state"] { color: #126b12; }
        tr.state-backoff td[data-field="state"], tr.state-error td[data-field="state"],
        tr.state-displaced td[data-field="state"], tr.state-rejected td[data-field="state"] { color: #a11; }
        td[data-field="last_error"] { color: #a11; max-width: 28em; }
        .note { color: #555; font-size: .9em; }
        """
}
