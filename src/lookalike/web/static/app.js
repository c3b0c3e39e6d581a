// lookalike web app: plain ES module, no build step. Every panel calls the JSON API under /api
// and shows empty states and errors in words. DOM is built with `h()` (no innerHTML with data).

const view = document.getElementById("view");
const PAGE = 48;
let catalog = null;       // GET /api/catalog
let renderToken = 0;      // stale async renders check this before touching the DOM

// -- helpers ---------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `request failed (HTTP ${status})`);
    this.status = status;
    this.code = body && body.error;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, body);
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("application/json") ? response.json() : response.blob();
}

const postJSON = (path, body, signal) =>
  api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal });

function uploadForm(file, fields = {}) {
  const form = new FormData();
  form.append("file", file);
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  return form;
}

const itemHref = (id) => `#/item/${encodeURIComponent(id)}`;
const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function state(kind, message, hint) {
  return h("div", { class: `state ${kind}`, role: kind === "error" ? "alert" : "status" },
    h("p", {}, message), hint ? h("p", { class: "hint" }, hint) : null);
}

// An API error shown in words; 409 feature_unavailable = not set up yet (an empty state, not a failure).
function errorState(err) {
  if (err instanceof ApiError && err.code === "feature_unavailable") return state("empty", err.message);
  if (err instanceof ApiError && err.status === 404) return state("empty", err.message);
  return state("error", err.message || String(err));
}

function card(item, extra = {}) {
  return h("a", { class: "card", href: itemHref(item.id), title: item.id, dataset: { id: item.id } },
    h("img", { src: item.thumb_url, alt: item.label || item.id, loading: "lazy", decoding: "async" }),
    h("span", { class: "caption" },
      h("span", { class: "label" }, item.label || item.id),
      item.score !== undefined ? h("span", { class: "score", title: "similarity (higher is closer)" }, fmt(item.score)) : null),
    extra.note ? h("span", { class: "note" }, extra.note) : null);
}

function grid(items, emptyMessage = "Nothing to show.") {
  if (!items || items.length === 0) return state("empty", emptyMessage);
  return h("div", { class: "grid" }, items.map((it) => card(it)));
}

function row(title, items, emptyMessage) {
  return h("section", { class: "row-section" }, h("h3", {}, title),
    items && items.length ? h("div", { class: "row" }, items.map((it) => card(it))) : state("empty", emptyMessage));
}

function mount(...nodes) {
  view.replaceChildren(...nodes);
  window.scrollTo(0, 0);
}

async function section(target, loader) {
  // Fill `target` from an async loader, replacing a spinner; errors become words.
  const token = renderToken;
  target.replaceChildren(h("p", { class: "loading" }, "Loading…"));
  try {
    const node = await loader();
    if (token === renderToken) target.replaceChildren(node);
  } catch (err) {
    if (token === renderToken) target.replaceChildren(errorState(err));
  }
}

// Drag-and-drop + file picker; calls onFile(File).
function dropzone(onFile, text = "Drop a photo here, or choose a file") {
  const input = h("input", { type: "file", accept: "image/*", class: "file-input", "aria-label": "choose a photo" });
  const zone = h("label", { class: "dropzone", tabindex: "0" }, h("span", {}, text), input);
  input.addEventListener("change", () => input.files[0] && onFile(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    if (e.dataTransfer.files[0]) onFile(e.dataTransfer.files[0]);
  });
  return zone;
}

// -- browse ----------------------------------------------------------------------------------
async function browse(params) {
  const page = Math.max(1, parseInt(params.get("page") || "1", 10));
  const label = params.get("label") || "";
  const filter = params.get("filter") || "";
  const labels = Object.entries((catalog && catalog.labels) || {});
  const labelSelect = h("select", { id: "label-filter", "aria-label": "label" },
    h("option", { value: "" }, `All labels (${catalog ? catalog.items : "?"})`),
    labels.map(([name, n]) => h("option", { value: name, selected: name === label }, `${name} (${n})`)));
  const filterInput = h("input", { id: "meta-filter", placeholder: "filter, e.g. colour=red or price<50", value: filter });
  const go = (p = 1) => {
    const q = new URLSearchParams();
    if (labelSelect.value) q.set("label", labelSelect.value);
    if (filterInput.value.trim()) q.set("filter", filterInput.value.trim());
    if (p > 1) q.set("page", p);
    location.hash = `#/?${q}`;
  };
  labelSelect.addEventListener("change", () => go());
  filterInput.addEventListener("keydown", (e) => e.key === "Enter" && go());
  const results = h("div", {});
  mount(h("div", { class: "toolbar" }, h("h2", {}, "Catalog"), labelSelect, filterInput,
    h("button", { onclick: () => go() }, "Filter")), results);

  await section(results, async () => {
    const q = new URLSearchParams({ offset: (page - 1) * PAGE, limit: PAGE });
    if (label) q.set("label", label);
    if (filter) q.set("filter", filter);
    const data = await api(`/api/items?${q}`);
    const pages = Math.max(1, Math.ceil(data.total / PAGE));
    const pager = h("div", { class: "pager" },
      h("button", { disabled: page <= 1, onclick: () => go(page - 1) }, "← Previous"),
      h("span", {}, `page ${page} of ${pages} · ${data.total} items`),
      h("button", { disabled: page >= pages, onclick: () => go(page + 1) }, "Next →"));
    const empty = data.total === 0 && !label && !filter
      ? "This catalog has no items yet: index some with `lookalike index SOURCE --catalog NAME`."
      : "No items match this filter.";
    return h("div", {}, grid(data.items, empty), data.total > PAGE ? pager : null);
  });
}

// -- item page -------------------------------------------------------------------------------
async function itemPage(id, params = new URLSearchParams()) {
  const head = h("div", { class: "item-head" });
  const similar = h("div", {});
  const goes = h("div", {});
  let ranking = rankingFromParams(params);
  const steered = steeredSearch((steer) => postJSON("/api/search", { item: id, k: 12, ...rankingBody(ranking), ...steer }),
    "No similar items (the catalog may hold only this item, or nothing passes the filters).");
  similar.replaceChildren(steered.node);
  const loadSimilar = () => steered.run();
  const controls = rankingControls(ranking, (next) => {
    ranking = next;
    history.replaceState(null, "", `${itemHref(id)}${rankingQuery(ranking)}`);
    loadSimilar();
  });
  mount(head, h("h3", {}, "More like this"), controls, similar, goes);
  await section(head, async () => {
    const item = await api(`/api/items/${encodeURIComponent(id)}`);
    const meta = Object.entries(item.metadata || {});
    return h("div", { class: "item-head-inner" },
      h("img", { class: "hero", src: item.image_url, alt: item.label || item.id }),
      h("div", { class: "item-info" },
        h("h2", {}, item.label || item.id),
        h("p", { class: "muted" }, item.id),
        h("dl", {}, meta.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]),
          item.width ? [h("dt", {}, "size"), h("dd", {}, `${item.width} × ${item.height}`)] : null),
        h("div", { class: "actions" },
          h("a", { class: "button", href: `#/latent?from=${encodeURIComponent(item.id)}` }, "Explore in latent space"),
          h("a", { class: "button", href: `#/shop?item=${encodeURIComponent(item.id)}` }, "Shop the look"))));
  });
  loadSimilar();
  section(goes, async () => {
    const data = await api(`/api/items/${encodeURIComponent(id)}/goes-with?k=8`);
    if (!data.rows.length) return state("empty", "No other categories to pair this item with.");
    return h("div", {}, h("h3", {}, "Goes with"),
      data.rows.map((r) => row(r.category, r.results, "Nothing suitable in this category.")));
  });
}

// -- upload search ---------------------------------------------------------------------------
function uploadPage(params = new URLSearchParams()) {
  const preview = h("div", { class: "preview" });
  const results = h("div", { id: "upload-results" });
  let ranking = rankingFromParams(params);
  let photo = null;
  const steered = steeredSearch((steer) => {
    const form = uploadForm(photo, { k: 24, examples: JSON.stringify(steer.examples), diversity: steer.diversity,
      collapse_duplicates: steer.collapse_duplicates });
    for (const [key, values] of Object.entries(rankingForm(ranking))) values.forEach((v) => form.append(key, v));
    return api("/api/search/image", { method: "POST", body: form });
  });
  const search = () => {
    if (!photo) return;
    if (!results.firstChild) results.replaceChildren(steered.node);
    steered.run();
  };
  const run = (file) => {
    photo = file;
    preview.replaceChildren(h("img", { src: URL.createObjectURL(file), alt: "your photo" }), h("p", { class: "muted" }, file.name));
    search();
  };
  const controls = rankingControls(ranking, (next) => {
    ranking = next;
    history.replaceState(null, "", `#/upload${rankingQuery(ranking)}`);
    search();
  });
  mount(h("h2", {}, "Search by photo"),
    h("p", { class: "muted" }, "Your photo is compared with every catalog image; nothing is stored."),
    h("div", { class: "upload-layout" }, dropzone(run), preview), controls, results);
}

// -- ranking: filters, boosts, one result per product, "why this rank" ------------------------
// State lives in the page's URL (?filter=…&boost=…&group_by=…&variant=…) so a view can be shared.
const splitClauses = (text) => text.split(";").map((x) => x.trim()).filter(Boolean);

function rankingFromParams(params) {
  return { filters: params.getAll("filter"), boosts: params.getAll("boost"),
    group_by: params.get("group_by") || "", variant: params.get("variant") || "" };
}

function rankingQuery(r) {
  const q = new URLSearchParams();
  r.filters.forEach((f) => q.append("filter", f));
  r.boosts.forEach((b) => q.append("boost", b));
  if (r.group_by) q.set("group_by", r.group_by);
  if (r.group_by && r.variant) q.set("variant", r.variant);
  const text = q.toString();
  return text ? `?${text}` : "";
}

// POST /api/search fields
function rankingBody(r) {
  return { filters: r.filters, boosts: r.boosts, group_by: r.group_by || null, variant: (r.group_by && r.variant) || null };
}

// POST /api/search/image form fields (repeatable)
function rankingForm(r) {
  return { filter: r.filters, boost: r.boosts, group_by: r.group_by ? [r.group_by] : [],
    variant: r.group_by && r.variant ? [r.variant] : [] };
}

function rankingControls(ranking, onApply) {
  const keys = (catalog && catalog.metadata_keys) || [];
  const columns = ["label", ...keys];
  const filterInput = h("input", { id: "rank-filter", class: "wide", value: ranking.filters.join("; "),
    placeholder: "filters: price<50; colour in red,blue; brand exists", "aria-label": "filters",
    title: "Filter clauses separated by ';' — price<50, 20<=price<=80, colour=red, colour!=red, colour in red,blue, brand exists, brand missing" });
  const boostInput = h("input", { id: "rank-boost", value: ranking.boosts.join("; "),
    placeholder: "boosts: in_stock=1:+0.05", "aria-label": "boosts",
    title: "CONDITION:WEIGHT separated by ';' — the weight is added to the score of items matching the condition" });
  const groupSelect = h("select", { id: "rank-group", "aria-label": "one result per" },
    h("option", { value: "" }, "every image"),
    columns.map((c) => h("option", { value: c, selected: c === ranking.group_by }, `one per ${c}`)));
  const variantSelect = h("select", { id: "rank-variant", "aria-label": "say which variant matched",
    disabled: !ranking.group_by },
    h("option", { value: "" }, "no variant"),
    keys.map((c) => h("option", { value: c, selected: c === ranking.variant }, `variant: ${c}`)));
  const apply = () => {
    variantSelect.disabled = !groupSelect.value;
    onApply({ filters: splitClauses(filterInput.value), boosts: splitClauses(boostInput.value),
      group_by: groupSelect.value, variant: groupSelect.value ? variantSelect.value : "" });
  };
  groupSelect.addEventListener("change", apply);
  variantSelect.addEventListener("change", apply);
  return h("form", { class: "toolbar ranking", onsubmit: (e) => { e.preventDefault(); apply(); } },
    filterInput, boostInput, groupSelect, variantSelect, h("button", { type: "submit" }, "Apply"));
}

// "why this rank": the score parts of one hit (visual, its shape/colour split, each rule's term).
function whyRank(hit) {
  const parts = hit.score_parts || {};
  const lines = [];
  if ("visual" in parts) {
    lines.push(h("li", {}, `visual ${fmt(parts.visual)}`,
      "visual.shape" in parts ? ` (shape ${fmt(parts["visual.shape"])} + colour ${fmt(parts["visual.colour"])})` : ""));
  }
  for (const [name, value] of Object.entries(parts)) {
    if (name.startsWith("visual")) continue;
    if (name === "pin") lines.push(h("li", {}, "pinned first"));
    else if (name === "bury") lines.push(h("li", {}, "buried: shown last"));
    else lines.push(h("li", {}, `${name} ${value >= 0 ? "+" : "−"}${fmt(Math.abs(value))}`));
  }
  lines.push(h("li", { class: "total" }, `= score ${fmt(hit.score)}`));
  return h("details", { class: "why" }, h("summary", {}, `why #${hit.rank}`), h("ul", {}, lines));
}

function rankedCard(hit) {
  const more = (hit.group || []).length;
  const note = [more ? `+${more} more image${more > 1 ? "s" : ""}` : null,
    hit.matched_variant ? `matched: ${hit.matched_variant}` : null].filter(Boolean).join(" · ");
  return h("div", { class: "ranked", dataset: { id: hit.id } }, card(hit, { note }), whyRank(hit));
}

// -- steering: 👍/👎 examples as removable chips, diversity, "no close match" (issue #16) -------
// `request(steer)` runs the page's search with the steering options added ({examples: [{item,
// weight}], diversity, collapse_duplicates}) and resolves to a SearchResponse. Every 👍/👎 adds the
// tile's item as an example (weight +1 / -0.5, search.examples.NEGATIVE_WEIGHT) and re-runs it. Returns {node, run}.
function steeredSearch(request, emptyMessage = "No similar items found.") {
  const examples = [];          // [{item, weight, label, thumb_url}]
  const controls = { diversity: 0, collapse: false };
  const chips = h("div", { class: "chips", "aria-label": "examples" });
  const results = h("div", { class: "steered-results" });
  const lambda = h("input", { type: "range", min: "0", max: "1", step: "0.1", value: "0", id: "diversity",
    "aria-label": "diversity λ" });
  const lambdaOut = h("output", { for: "diversity" }, "0");
  const collapse = h("input", { type: "checkbox", id: "collapse-duplicates" });
  lambda.addEventListener("input", () => { lambdaOut.textContent = lambda.value; });
  lambda.addEventListener("change", () => { controls.diversity = Number(lambda.value); run(); });
  collapse.addEventListener("change", () => { controls.collapse = collapse.checked; run(); });
  const bar = h("div", { class: "toolbar steer-controls" },
    h("label", { title: "0 = most similar first; higher = more varied results (MMR)" }, "Diversity ", lambda, " ", lambdaOut),
    h("label", { title: "fold near-identical shots into the better hit" }, collapse, " collapse near duplicates"));

  function feedback(hit, weight) {
    const found = examples.find((e) => e.item === hit.id);
    if (found) found.weight = weight;
    else examples.push({ item: hit.id, weight, label: hit.label || hit.id, thumb_url: hit.thumb_url });
    run();
  }

  function renderChips() {
    chips.replaceChildren(...examples.map((e, i) => h("span", { class: `chip ${e.weight > 0 ? "more" : "less"}`,
      dataset: { item: e.item } },
      h("img", { src: e.thumb_url, alt: "" }),
      `${e.weight > 0 ? "more like" : "less like"} ${e.label}`,
      h("button", { class: "chip-remove", "aria-label": `remove ${e.item}`, title: "remove",
        onclick: () => { examples.splice(i, 1); run(); } }, "×"))));
  }

  function tile(hit) {
    const folded = hit.duplicates && hit.duplicates.length
      ? h("span", { class: "note", title: hit.duplicates.join(", ") }, `+${hit.duplicates.length} near duplicate(s)`) : null;
    return h("div", { class: `tile${hit.weak ? " weak" : ""}`, dataset: { id: hit.id } },
      rankedCard(hit), folded,
      h("div", { class: "feedback" },
        h("button", { class: "up", "aria-label": `more like ${hit.id}`, title: "more like this",
          onclick: () => feedback(hit, 1) }, "▲ more"),
        h("button", { class: "down", "aria-label": `less like ${hit.id}`, title: "less like this",
          onclick: () => feedback(hit, -0.5) }, "▼ less"),
        hit.weak ? h("span", { class: "weak-note", title: "below this catalog's match threshold" }, "weak") : null));
  }

  function run() {
    renderChips();
    const steer = { examples: examples.map((e) => ({ item: e.item, weight: e.weight })),
      diversity: controls.diversity, collapse_duplicates: controls.collapse };
    return section(results, async () => {
      const data = await request(steer);
      if (!data.results.length) return state("empty", emptyMessage);
      const message = data.no_close_match
        ? h("div", { class: "state warn no-match", role: "status" },
          h("p", {}, "No close match: nothing in this catalog looks much like this."),
          h("p", { class: "hint" }, "The closest items are shown anyway, marked weak."))
        : null;
      return h("div", {}, message, h("div", { class: "grid ranked-grid" }, data.results.map(tile)));
    });
  }

  return { node: h("div", { class: "steered" }, bar, chips, results), run };
}

// -- latent explorer -------------------------------------------------------------------------
async function latentPage(params) {
  mount(h("h2", {}, "Latent explorer"), h("p", { class: "loading" }, "Loading the model…"));
  const info = await api("/api/latent").catch((err) => err);
  if (info instanceof Error) {
    mount(h("h2", {}, "Latent explorer"), errorState(info));
    return;
  }
  let z = info.ranges.map((r) => r.mean);
  const picture = h("img", { id: "latent-image", class: "generated", alt: "image generated from the sliders" });
  const status = h("p", { class: "muted", id: "latent-status" }, "");
  const nearest = h("div", { id: "latent-nearest" });
  const sliders = info.ranges.map((r, i) => h("input", {
    type: "range", min: r.min, max: r.max, step: "any", value: z[i],
    "aria-label": `latent dimension ${i + 1}`, dataset: { index: i },
  }));
  let controller = null;
  const render = async () => {
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    try {
      status.textContent = "generating…";
      const blob = await postJSON("/api/latent/decode", { z }, signal);
      const old = picture.src;
      picture.src = URL.createObjectURL(blob);
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      status.textContent = "";
      const data = await postJSON("/api/latent/nearest?k=8", { z }, signal);
      nearest.replaceChildren(grid(data.results, "No real products near this point."));
    } catch (err) {
      if (err.name !== "AbortError") status.textContent = err.message;
    }
  };
  const rerender = debounce(render, 120);
  sliders.forEach((s, i) => s.addEventListener("input", () => { z[i] = parseFloat(s.value); rerender(); }));
  const setZ = (values) => { z = values.slice(); sliders.forEach((s, i) => { s.value = z[i]; }); render(); };

  const fromItem = async (id) => {
    try { setZ((await api(`/api/items/${encodeURIComponent(id)}/latent`)).z); }
    catch (err) { status.textContent = err.message; }
  };
  const idA = h("input", { placeholder: "item id A", value: params.get("from") || "", "aria-label": "item A" });
  const idB = h("input", { placeholder: "item id B", "aria-label": "item B" });
  const strip = h("div", { class: "row strip", id: "interpolation" });
  const interpolate = async () => {
    if (!idA.value || !idB.value) { strip.replaceChildren(state("empty", "Give two item ids to interpolate between.")); return; }
    await section(strip, async () => {
      const q = new URLSearchParams({ a: idA.value, b: idB.value, steps: 7 });
      const data = await api(`/api/latent/interpolate?${q}`);
      // the real photos at both ends, the decoded path between them
      const end = (id, name) => h("a", { class: "end", href: itemHref(id), title: id },
        h("img", { src: `/api/items/${encodeURIComponent(id)}/thumb`, alt: `item ${name}` }), `${name}: real photo`);
      return h("div", { class: "row" }, end(data.a, "A"), data.images.map((src, i) => h("button", {
        class: "frame", title: "continue from this step", onclick: () => setZ(data.steps[i]),
      }, h("img", { src, alt: `step ${i + 1} of ${data.images.length}` }))), end(data.b, "B"));
    });
  };
  const randomId = async () => {
    const n = (catalog && catalog.items) || 1;
    const page = await api(`/api/items?offset=${Math.floor(Math.random() * n)}&limit=1`);
    return page.items.length ? page.items[0].id : "";
  };
  const randomPair = async () => {
    idA.value = await randomId(); idB.value = await randomId();
    await fromItem(idA.value); interpolate();
  };
  mount(h("h2", {}, "Latent explorer"),
    h("p", { class: "muted" }, `Model ${info.model}: ${info.dim} dimensions, decoded at ${info.image_size} px; each slider spans what the catalog's items use. The nearest real products follow the sliders.`),
    h("div", { class: "latent-layout" },
      h("div", { class: "latent-picture" }, picture, status,
        h("button", { onclick: () => setZ(info.ranges.map((r) => r.mean)) }, "Reset to the average"),
        h("button", { id: "latent-random", title: "a point drawn where the catalog's items lie (the aggregate posterior)",
          onclick: async () => {
            try { setZ((await api(`/api/latent/sample?seed=${Math.floor(Math.random() * 2147483647)}`)).z); }
            catch (err) { status.textContent = err.message; }
          } }, "Random product")),
      h("div", { class: "sliders" }, sliders.map((s, i) => h("label", { class: "slider" }, h("span", {}, `z${i + 1}`), s)))),
    h("div", { class: "toolbar" }, idA, h("button", { onclick: () => fromItem(idA.value) }, "Start from item A"),
      idB, h("button", { onclick: interpolate }, "Interpolate A → B"),
      h("button", { onclick: randomPair }, "Two random items")),
    strip, h("h3", {}, "Nearest real products"), nearest);
  if (params.get("from")) fromItem(params.get("from")); else render();
}

// -- clusters, map, duplicates ---------------------------------------------------------------
// A stored clustering / map older than the catalog's items says so (API field "stale") instead of looking current.
function staleNote(data) {
  return data.stale ? h("p", { class: "stale-note", role: "status" }, `Out of date: ${data.stale}.`) : null;
}

async function clustersPage() {
  const body = h("div", {});
  mount(h("h2", {}, "Clusters"), body);
  await section(body, async () => {
    const data = await api("/api/clusters");
    if (!data.clusters.length) return state("empty", "No clusters yet.");
    const hue = (label) => (data.labels.indexOf(label) * 360) / Math.max(1, data.labels.length);
    // The label mix of one cluster: a stacked bar (one colour per label, same in every cluster) and its legend.
    const mix = (c) => {
      if (!c.label_mix.length) return null;
      const total = c.label_mix.reduce((sum, m) => sum + m.count, 0);
      const bar = h("div", { class: "mix", role: "img", "aria-label": "label mix: " + c.label_mix.map((m) => `${m.label} ${m.count}`).join(", ") },
        c.label_mix.map((m) => {
          const part = h("span", { title: `${m.label}: ${m.count} of ${total}` });
          part.style.width = `${(100 * m.count) / total}%`;
          part.style.setProperty("--hue", hue(m.label));
          return part;
        }));
      const legend = h("div", { class: "mix-legend" }, c.label_mix.slice(0, 5).map((m) => {
        const swatch = h("i", {});
        swatch.style.setProperty("--hue", hue(m.label));
        return h("span", {}, swatch, `${m.label} ${Math.round((100 * m.count) / total)}%`);
      }), c.label_mix.length > 5 ? h("span", {}, `+${c.label_mix.length - 5} more`) : null);
      return h("div", { class: "mix-wrap" }, bar, legend);
    };
    const how = data.k_chosen_by && data.k_chosen_by !== "user" ? ` (k chosen by ${data.k_chosen_by})` : "";
    return h("div", {}, staleNote(data), h("p", { class: "muted" }, `${data.clusters.length} clusters · ${data.method || ""}${how} on ${data.encoder || "default"} vectors · ` +
        "each row: the items nearest the cluster's centre" + (data.labels.length ? ", and the labels of its members" : "")),
      data.clusters.map((c) => h("section", { class: "row-section cluster", dataset: { cluster: c.id } },
        h("h3", {}, `Cluster ${c.id} · ${c.size} items${c.label ? ` · mostly ${c.label}` : ""}${c.purity != null ? ` (${Math.round(c.purity * 100)}%)` : ""}`),
        mix(c),
        c.examples.length ? h("div", { class: "row" }, c.examples.map((it) => card(it))) : state("empty", "Empty cluster."))));
  });
}

async function mapPage() {
  const body = h("div", {});
  mount(h("h2", {}, "Map"), h("p", { class: "muted" }, "Each point is a product, placed so similar products sit together. Click one to open it."), body);
  await section(body, async () => {
    const data = await api("/api/map");
    if (!data.points.length) return state("empty", "No map yet.");
    const xs = data.points.map((p) => p.x), ys = data.points.map((p) => p.y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const labels = [...new Set(data.points.map((p) => p.label || ""))].sort();
    const thumbs = data.points.length <= 800;
    const plot = h("div", { class: `map ${thumbs ? "thumbs" : "dots"}`, id: "map" });
    for (const p of data.points) {
      const a = h("a", { class: "pt", href: itemHref(p.id), title: `${p.label || ""} · ${p.id}`, dataset: { id: p.id } },
        thumbs ? h("img", { src: p.thumb_url, alt: p.label || p.id, loading: "lazy" }) : null);
      a.style.left = `${(100 * (p.x - x0)) / (x1 - x0 || 1)}%`;
      a.style.top = `${(100 * (p.y - y0)) / (y1 - y0 || 1)}%`;
      a.style.setProperty("--hue", (labels.indexOf(p.label || "") * 360) / labels.length);
      plot.append(a);
    }
    return h("div", {}, staleNote(data), h("div", { class: "map-wrap" }, plot),
      h("p", { class: "muted" }, `${data.points.length} items · ${data.method || ""}`));
  });
}

async function duplicatesPage() {
  const body = h("div", {});
  mount(h("h2", {}, "Duplicates"), body);
  await section(body, async () => {
    const data = await api("/api/duplicates");
    if (!data.groups.length) return state("empty", `No duplicates among ${data.items_checked} items (distance ≤ ${data.threshold}).`);
    return h("div", {},
      h("p", { class: "muted" }, `${data.total_groups} groups among ${data.items_checked} items · ${data.encoder} vectors, cosine distance ≤ ${data.threshold}` +
        (data.total_groups > data.groups.length ? ` · showing the ${data.groups.length} largest` : "")),
      data.groups.map((g, i) => row(`Group ${i + 1} · ${g.items.length} items · ${g.exact ? "exact copies" : `near duplicates (distance ≤ ${fmt(g.max_distance)})`}`, g.items, "")));
  });
}

// -- shop the look ---------------------------------------------------------------------------
// Detected regions come from POST /api/shop; a box the shopper drags on the photo (or a click on a
// detected region) searches just that part with POST /api/search/image and box=x0,y0,x1,y1 in the
// photo's own pixels (the <img> shows it EXIF-rotated, as the server crops it).
const MIN_DRAG = 8; // px of the photo: smaller drags are clicks
function shopPage(params) {
  const stage = h("div", { class: "shop-stage" });
  const boxRows = h("div", { class: "box-results" });
  const rows = h("div", {});
  let source = null; // () => Promise<Blob>: the photo being shopped, for box searches
  const searchBox = (frame, photo, box, title) => {
    frame.querySelectorAll(".box.active").forEach((el) => el.classList.remove("active"));
    section(boxRows, async () => {
      const blob = await source();
      const data = await api("/api/search/image", { method: "POST", body: uploadForm(blob, { k: 8, box: box.join(",") }) });
      return row(`${title} · box ${box.join(", ")}`, data.results, "No match for this part of the photo.");
    });
  };
  const drawable = (frame, photo) => {
    // pointer drag -> a dashed box; on release, the box in the photo's pixels is searched
    let start = null, drawn = null;
    const toPhoto = (e) => {
      const r = photo.getBoundingClientRect();
      const sx = photo.naturalWidth / r.width, sy = photo.naturalHeight / r.height;
      return [Math.min(Math.max(0, (e.clientX - r.left) * sx), photo.naturalWidth),
              Math.min(Math.max(0, (e.clientY - r.top) * sy), photo.naturalHeight)];
    };
    const place = (el, [x0, y0, x1, y1]) => Object.assign(el.style, {
      left: `${(100 * x0) / photo.naturalWidth}%`, top: `${(100 * y0) / photo.naturalHeight}%`,
      width: `${(100 * (x1 - x0)) / photo.naturalWidth}%`, height: `${(100 * (y1 - y0)) / photo.naturalHeight}%`,
    });
    const boxOf = (a, b) => [Math.floor(Math.min(a[0], b[0])), Math.floor(Math.min(a[1], b[1])),
                             Math.ceil(Math.max(a[0], b[0])), Math.ceil(Math.max(a[1], b[1]))];
    let pressed = null; // the detected region under the pointer when it went down (a click on it)
    frame.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      start = toPhoto(e);
      pressed = e.target.closest(".box");
      frame.setPointerCapture(e.pointerId);
      if (drawn) drawn.remove();
      drawn = h("div", { class: "drawn-box" });
      place(drawn, boxOf(start, start));
      frame.append(drawn);
    });
    frame.addEventListener("pointermove", (e) => { if (start) place(drawn, boxOf(start, toPhoto(e))); });
    frame.addEventListener("pointerup", (e) => {
      if (!start) return;
      const box = boxOf(start, toPhoto(e));
      start = null;
      if (box[2] - box[0] < MIN_DRAG || box[3] - box[1] < MIN_DRAG) { // a click, not a drag
        drawn.remove(); drawn = null;
        if (pressed) pressed.dispatchEvent(new Event("choose"));
        return;
      }
      place(drawn, box);
      searchBox(frame, photo, box, "Your box");
    });
  };
  const show = (imageUrl, loader, blob) => {
    source = blob;
    const photo = h("img", { src: imageUrl, alt: "photo", draggable: "false" });
    const frame = h("div", { class: "shop-photo", title: "drag a box around one thing to search just that part" }, photo);
    stage.replaceChildren(frame, h("p", { class: "muted hint" },
      "Drag a box around anything in the photo, or click a found region, to search just that part."));
    boxRows.replaceChildren();
    drawable(frame, photo);
    section(rows, async () => {
      const data = await loader();
      const notes = [...data.notes, ...data.people.flatMap((p) => p.notes)];
      const noteList = notes.length ? h("ul", { class: "notes" }, notes.map((n) => h("li", {}, n))) : null;
      const skipped = (data.skipped || []).length ? h("details", { class: "skipped" },
        h("summary", {}, `${data.skipped.length} region(s) not searched`),
        h("ul", { class: "notes" }, data.skipped.map((s) => h("li", {}, `${s.name}: ${s.reason}`)))) : null;
      if (!data.regions.length) return h("div", {}, state("empty", "No garment regions found on this person."), noteList, skipped);
      data.regions.forEach((r, i) => {
        const name = r.region || r.category;
        const label = r.region && r.category !== r.region ? `${name}: ${r.category}` : name;
        const box = h("div", { class: "box", dataset: { region: i }, title: `search just this ${name}`, role: "button" },
          h("span", {}, `${i + 1} ${label}`));
        const choose = () => { searchBox(frame, photo, r.box, `${i + 1}. ${label} (whole catalog)`); box.classList.add("active"); };
        box.addEventListener("choose", choose); // a click on it (pointerup on the frame, see drawable)
        box.tabIndex = 0;
        box.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); } });
        Object.assign(box.style, {
          left: `${(100 * r.box[0]) / data.width}%`, top: `${(100 * r.box[1]) / data.height}%`,
          width: `${(100 * (r.box[2] - r.box[0])) / data.width}%`, height: `${(100 * (r.box[3] - r.box[1])) / data.height}%`,
        });
        frame.append(box);
      });
      return h("div", {}, noteList, data.regions.map((r, i) => row(
        `${i + 1}. ${r.region || r.category}` +
        (r.region && r.confidence !== null && r.confidence !== undefined ? ` · looks like ${r.category} (p ${fmt(r.confidence, 2)})` : "") +
        (r.searched ? ` · searched ${r.searched.join(", ")}` : " · searched the whole catalog"),
        r.results, "No match for this region.")), skipped);
    });
  };
  const upload = (file) => show(URL.createObjectURL(file),
    () => api("/api/shop", { method: "POST", body: uploadForm(file, { k: 8 }) }), async () => file);
  mount(h("h2", {}, "Shop the look"),
    h("p", { class: "muted" }, "Find each product in a photo and the closest catalog items for it."),
    dropzone(upload, "Drop an outfit photo here, or choose a file"), stage, boxRows, rows);
  const item = params.get("item");
  if (item) {
    const url = `/api/items/${encodeURIComponent(item)}/image`;
    show(url, () => api(`/api/items/${encodeURIComponent(item)}/shop?k=8`), () => api(url));
  }
}

// -- evaluation ------------------------------------------------------------------------------
// The quality page: per label worst first (GET /api/quality), its two figures as PNGs, the failed
// queries of the worst labels as strips (query, then what came back), and every metric below.
async function evalPage() {
  const body = h("div", {});
  const all = h("div", {});
  mount(h("h2", {}, "Retrieval quality"), body, all);
  await section(body, async () => {
    let q;
    try {
      q = await api("/api/quality");
    } catch (err) {  // 422: no labels, or no label with two items: nothing to measure (not a failure)
      if (err instanceof ApiError && err.status === 422) {
        return state("empty", err.message, "Quality needs a label column: index a CSV with a label per item (or class folders).");
      }
      throw err;
    }
    const k = q.k;
    const overall = q.overall;
    const table = h("table", { class: "metrics quality-table" },
      h("thead", {}, h("tr", {}, ["label", "n", "P@1", `mAP@${k}`, "top-1 confused with"].map((c) => h("th", {}, c)))),
      h("tbody", {}, q.labels.map((r) => h("tr", { dataset: { label: r.label } },
        h("th", {}, r.label), h("td", {}, r.n),
        h("td", { class: r.p_at_1 < overall["P@1"] ? "bad" : null }, fmt(r.p_at_1)),
        h("td", { class: r.map_at_k < overall[`mAP@${k}`] ? "bad" : null }, fmt(r.map_at_k)),
        h("td", {}, r.confused_with ? `${r.confused_with} (${Math.round(r.confused_share * 100)}%)` : "–")))));
    const strips = q.failures.map((f) => h("section", { class: "row-section failures", dataset: { label: f.label } },
      h("h3", {}, `${f.label}: queries whose nearest neighbour has another label`),
      f.queries.length ? f.queries.map((fq) => h("div", { class: "row failure" },
        h("div", { class: "query-card" }, card(fq.query)),
        fq.returned.map((it) => h("div", { class: it.label === f.label ? "hit" : "miss" }, card(it)))))
        : state("empty", "No failed query.")));
    return h("div", {},
      h("p", { class: "muted" }, `Leave-one-out retrieval on catalog ${q.catalog} with encoder ${q.encoder}: ` +
        `each of the ${q.n_queries} labelled items asks for its neighbours; a hit is relevant when its label matches.`),
      h("p", { class: "overall" }, `P@1 ${fmt(overall["P@1"])} · mAP@${k} ${fmt(overall[`mAP@${k}`])} · worst label first; red = below the overall value.`),
      table,
      h("div", { class: "figures" },
        h("img", { src: q.figures.labels, alt: "P@1 and mAP per label", class: "figure" }),
        h("img", { src: q.figures.confusion, alt: "top-1 confusion: query label vs label of the nearest neighbour", class: "figure" })),
      h("h3", {}, "Where it fails"),
      h("p", { class: "muted" }, "Per worst label, the queries that failed most (first: the query; red frame: another label)."),
      strips);
  });
  await section(all, async () => {
    const data = await api("/api/evaluation");
    const entries = Object.entries(data.metrics);
    if (!entries.length) return state("empty", "No evaluation available.");
    return h("details", {}, h("summary", {}, "All metrics (P@k, R@k, mAP@k, NDCG@k)"),
      h("table", { class: "metrics" }, h("tbody", {}, entries.map(([k, v]) =>
        h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "number" ? fmt(v) : String(v)))))));
  });
}

// -- router ----------------------------------------------------------------------------------
const ROUTES = {
  "": browse, item: null, upload: uploadPage, latent: latentPage, clusters: clustersPage, map: mapPage,
  duplicates: duplicatesPage, shop: shopPage, eval: evalPage,
};

function route() {
  renderToken += 1;
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const [name, ...rest] = path.split("/");
  document.querySelectorAll("#nav a").forEach((a) =>
    a.classList.toggle("active", a.dataset.route === (name || "browse")));
  document.getElementById("nav").classList.remove("open");
  if (name === "item") return itemPage(decodeURIComponent(rest.join("/")), params);
  const page = ROUTES[name];
  if (!page) return mount(state("empty", `There is no page called “${name}”.`, "Use the menu above."));
  return page(params);
}

async function start() {
  document.getElementById("menu-toggle").addEventListener("click", (e) => {
    const nav = document.getElementById("nav");
    nav.classList.toggle("open");
    e.currentTarget.setAttribute("aria-expanded", nav.classList.contains("open"));
  });
  try {
    catalog = await api("/api/catalog");
    document.getElementById("catalog-name").textContent = `${catalog.name} · ${catalog.items} items`;
    const health = await api("/api/health");
    document.getElementById("health").textContent =
      `lookalike ${health.version} · encoder ${health.encoder} · ${health.read_only ? "read-only" : "writable"}`;
    // Panels whose feature is not set up for this catalog stay reachable (they explain how to enable it).
    for (const [feature, ok] of Object.entries(health.features)) {
      const link = document.querySelector(`#nav a[data-route="${feature}"]`);
      if (link && !ok) { link.classList.add("off"); link.title = "not set up for this catalog yet: open to see how"; }
    }
  } catch (err) {
    mount(state("error", `Cannot reach the lookalike server: ${err.message}`, "Is `lookalike serve` still running?"));
    return;
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
