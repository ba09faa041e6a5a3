// facegate console: a little vanilla JavaScript over the REST API (same roles, same limits).
"use strict";
const $ = (sel) => document.querySelector(sel);
const maxUpload = Number(document.body.dataset.maxUpload || 10000000);
const maxFiles = Number(document.body.dataset.maxFiles || 5);

function say(text, kind) {
  const box = $("#message");
  if (!box) return;
  box.textContent = text;
  box.className = kind || "";
}

async function call(method, url, body) {
  // the session cookie goes along (same origin); errors are {code, message}
  let r;
  try {
    r = await fetch(url, {method, body, credentials: "same-origin"});
  } catch (e) {
    throw new Error("the server refused the upload or cannot be reached (" + e.message + ")");
  }
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) {
    const err = new Error(data && data.code ? data.code + ": " + data.message : "HTTP " + r.status);
    err.status = r.status;
    err.body = data;
    throw err;
  }
  return data;
}

function tooLarge(files) {
  // refused here, before any byte is sent (the server refuses it too)
  for (const f of files) {
    if (f.size > maxUpload) {
      return `image_too_large: ${f.name} is ${(f.size / 1e6).toFixed(1)} MB, the limit is ${(maxUpload / 1e6).toFixed(0)} MB`;
    }
  }
  if (files.length > maxFiles) return `form_limit_exceeded: ${files.length} photos, at most ${maxFiles}`;
  return null;
}

// ------------------------------------------------------------------------------ employees
const search = $("#search");
if (search) {
  search.addEventListener("input", () => {
    const q = search.value.toLowerCase();
    let shown = 0;
    document.querySelectorAll("#employees tbody tr[data-id]").forEach((tr) => {
      const hit = tr.dataset.search.includes(q);
      tr.hidden = !hit;
      shown += hit;
    });
    $("#count").textContent = shown;
  });
}
document.querySelectorAll("button.remove").forEach((b) => {
  b.addEventListener("click", async () => {
    const id = b.dataset.id;
    if (!confirm(`Remove ${id}? Their photos and embeddings are deleted.`)) return;
    try {
      const r = await call("DELETE", "/employees/" + encodeURIComponent(id));
      b.closest("tr").remove();
      say(`removed ${id}: ${r.vectors_removed} vectors, ${r.access_rows_erased} access-log rows erased`, "ok");
    } catch (e) {
      say(e.message, "error");
    }
  });
});

// ---------------------------------------------------------------------------------- enrol
const enrolForm = $("#enrol-form");
if (enrolForm) {
  const photos = $("#photos"), checks = $("#checks"), button = $("#enrol");
  photos.addEventListener("change", async () => {
    button.disabled = true;
    checks.innerHTML = "";
    say("");
    const files = [...photos.files];
    if (!files.length) return;
    const big = tooLarge(files);
    if (big) { say(big, "error"); return; }
    say("checking " + files.length + " photo(s)…", "busy");
    const form = new FormData();
    files.forEach((f) => form.append("images", f, f.name));
    try {
      const results = await call("POST", "/photos/check", form);
      let ok = true;
      for (const c of results) {
        const li = document.createElement("li");
        li.className = c.ok ? "ok" : "error";
        li.textContent = c.ok
          ? `${c.name}: one face, ${c.face_px} px, sharpness ${c.sharpness}`
          : c.problems.join("; ");
        checks.appendChild(li);
        ok = ok && c.ok;
      }
      button.disabled = !ok;
      say(ok ? "photos look good: ready to enrol" : "fix the photos above before enrolling", ok ? "ok" : "error");
    } catch (e) {
      say(e.message, "error");
    }
  });
  const panel = $("#duplicate");
  let newPhotoUrl = null;
  function hideDuplicate() {
    panel.hidden = true;
    if (newPhotoUrl) URL.revokeObjectURL(newPhotoUrl);
    newPhotoUrl = null;
  }
  function showDuplicate(d, files) {
    // a suspected duplicate: both faces side by side, the operator decides (enrol anyway = force)
    const chance = d.false_alarm == null ? "" :
      `; a new person comes this close to someone here by chance with probability ~${d.false_alarm.toExponential(1)}`;
    $("#duplicate-text").textContent = `${d.photo} looks like ${d.other_id}, already enrolled: distance ` +
      `${d.distance.toFixed(3)} ≤ threshold ${d.tau.toFixed(3)}${chance}.`;
    hideDuplicate();
    newPhotoUrl = URL.createObjectURL(files[d.photo_index] || files[0]);
    $("#duplicate-new").src = newPhotoUrl;
    $("#duplicate-new-caption").textContent = `new: ${d.employee_id} (${d.photo})`;
    $("#duplicate-other").src = d.other_photo_url;
    $("#duplicate-other-caption").textContent = `enrolled: ${d.other_id}`;
    panel.hidden = false;
  }
  async function submitEnrol(force) {
    const files = [...photos.files];
    const big = tooLarge(files);
    if (big) { say(big, "error"); return; }
    const form = new FormData();
    form.append("employee_id", $("#employee_id").value.trim());
    form.append("name", $("#employee_name").value.trim());
    if (force) form.append("force", "true");
    files.forEach((f) => form.append("images", f, f.name));
    button.disabled = true;
    hideDuplicate();
    say("enrolling…", "busy");
    try {
      const r = await call("POST", "/employees", form);
      say(`enrolled ${r.employee_id} from ${r.photos} photo(s); ${r.employees} employees`, "ok");
      enrolForm.reset();
      checks.innerHTML = "";
    } catch (e) {
      if (e.body && e.body.code === "duplicate_face" && e.body.other_id) {
        showDuplicate(e.body, files);
        say("suspected duplicate: compare the two faces before deciding", "error");
      } else {
        say(e.message, "error");
      }
      button.disabled = false;
    }
  }
  enrolForm.addEventListener("submit", (ev) => { ev.preventDefault(); submitEnrol(false); });
  $("#duplicate-force").addEventListener("click", () => submitEnrol(true));
  $("#duplicate-cancel").addEventListener("click", () => { hideDuplicate(); say("not enrolled", ""); });
}

// ------------------------------------------------------------------------------- identify
const idForm = $("#identify-form");
if (idForm) {
  idForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = $("#frame").files[0];
    if (!file) return;
    const big = tooLarge([file]);
    if (big) { say(big, "error"); return; }
    const form = new FormData();
    form.append("image", file, file.name);
    const entrance = $("#entrance").value.trim();
    if (entrance) form.append("entrance", entrance);
    say("identifying…", "busy");
    $("#faces").innerHTML = "";
    try {
      const r = await call("POST", "/identify", form);
      await draw(file, r.faces);
      const list = $("#faces");
      for (const f of r.faces) {
        const li = document.createElement("li");
        const lv = f.liveness;
        const attack = lv && lv.label === "attack";
        li.className = f.decision === "attack" ? "attack" : f.recognized ? "recognized" : "stranger";
        li.textContent = (f.decision === "attack"
          ? "presentation attack: refused"
          : f.recognized
          ? `${f.name} (${f.employee_id}), distance ${f.distance.toFixed(3)} ≤ ${f.tau.toFixed(3)}`
          : `not recognized` + (f.distance != null ? `, nearest at ${f.distance.toFixed(3)} > ${f.tau.toFixed(3)}` : ""))
          + (lv ? `; liveness ${lv.score.toFixed(3)} ${attack ? "≤" : ">"} ${lv.threshold.toFixed(3)}`
                  + (attack && f.decision !== "attack" ? " (ATTACK, flagged)" : "") : "");
        list.appendChild(li);
      }
      const n = r.faces.filter((f) => f.recognized).length;
      say(`${r.faces.length} face(s), ${n} recognized`, r.faces.length ? "ok" : "error");
    } catch (e) {
      say(e.message, "error");
    }
  });
}

async function draw(file, faces) {
  const canvas = $("#canvas");
  const img = await createImageBitmap(file);
  const scale = Math.min(1, 960 / img.width);
  canvas.width = Math.round(img.width * scale);
  canvas.height = Math.round(img.height * scale);
  const g = canvas.getContext("2d");
  g.drawImage(img, 0, 0, canvas.width, canvas.height);
  g.lineWidth = 3;
  g.font = "bold 16px sans-serif";
  for (const f of faces) {
    const [l, t, r, b] = f.box.map((v) => v * scale);
    const colour = f.recognized ? "#1a9850" : "#d73027";
    const attack = f.liveness && f.liveness.label === "attack";
    const label = (f.decision === "attack" ? "presentation attack" : f.recognized ? f.name : "not recognized")
      + (attack && f.decision !== "attack" ? " (attack?)" : "");
    g.strokeStyle = colour;
    g.strokeRect(l, t, r - l, b - t);
    const w = g.measureText(label).width + 8;
    g.fillStyle = colour;
    g.fillRect(l, Math.max(0, t - 22), w, 22);
    g.fillStyle = "#fff";
    g.fillText(label, l + 4, Math.max(16, t - 6));
  }
}

// review page: label a capture, then drop its row; update templates from confirmed captures
document.querySelectorAll("#review button.label").forEach((b) => b.addEventListener("click", async () => {
  const row = b.closest("tr");
  const form = new FormData();
  form.append("label", b.dataset.label);
  const who = row.querySelector("input.who").value.trim();
  if (b.dataset.label === "employee" && who) form.append("employee_id", who);
  try {
    await call("POST", `/captures/${b.dataset.id}/label`, form);
    row.remove();
    say(`capture ${b.dataset.id}: ${b.dataset.label}${b.dataset.label === "employee" ? " " + who : ""}`, "ok");
  } catch (e) { say(e.message, "error"); }
}));
const templatesForm = $("#templates");
if (templatesForm) templatesForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await call("POST", "/captures/templates", new FormData());
    say(`templates updated for ${Object.keys(r.employees).length} employee(s); gallery ${r.gallery_version}`, "ok");
  } catch (e) { say(e.message, "error"); }
});
