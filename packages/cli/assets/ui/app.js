// rung ui — the browser side. Plain JavaScript run as it is (no bundler, no network but its own
// server): `rung ui` serves it with the page shells, and `rung study report --html` inlines it with
// the data (then `#rung-data` holds the whole study and nothing is fetched). Charts are uPlot (canvas);
// the parallel-coordinates plot is drawn on a canvas here. Every chart says what it drew in data-*
// attributes (series, points, lines), which the tests read.
(() => {
  const body = document.body;
  const main = document.getElementById("main");
  const page = body.dataset.page;
  const embedded = document.getElementById("rung-data");
  const isStatic = embedded !== null;

  // Okabe–Ito: eight colours told apart with every common colour-vision deficiency.
  const OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];
  // Viridis stops: perceptually uniform and colour-blind safe, for many trials coloured by their metric.
  const VIRIDIS = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ];

  function viridis(x, alpha) {
    const v = Math.min(1, Math.max(0, Number.isFinite(x) ? x : 0)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(v));
    const f = v - i;
    const a = VIRIDIS[i];
    const b = VIRIDIS[i + 1];
    const c = [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f));
    return `rgba(${c[0]},${c[1]},${c[2]},${alpha === undefined ? 1 : alpha})`;
  }

  /** h("tag", {attrs}, children…): a DOM element; strings become text (never HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat())
      if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
    return el;
  }

  function num(x, digits) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "–";
    if (Number.isInteger(x)) return String(x);
    return Number(x).toPrecision(digits || 4);
  }
  const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)} %`);
  const gpuH = (s) => (s / 3600).toFixed(s >= 36 ? 2 : 3);
  const hours = (s) => `${gpuH(s)} GPU-h`;
  const when = (ts) => (ts ? new Date(ts).toLocaleString() : "–");
  const enc = encodeURIComponent;
  const studyHref = (s) => `/study/${enc(s)}`;
  const trialHref = (s, t) => `/study/${enc(s)}/trial/${enc(t)}`;

  function table(caption, head, rows, opts) {
    return h(
      "div",
      { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption },
      h(
        "table",
        { class: (opts && opts.cls) || "" },
        h("caption", {}, caption),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            head.map((c) => h("th", { scope: "col" }, c)),
          ),
        ),
        h(
          "tbody",
          {},
          rows.map((r) =>
            h(
              "tr",
              {},
              r.map((c) => h("td", {}, c)),
            ),
          ),
        ),
      ),
    );
  }

  function section(title, ...children) {
    return h("section", { "aria-label": title }, h("h2", {}, title), ...children);
  }

  function showError(message) {
    main.replaceChildren(h("div", { class: "error", role: "alert" }, h("h1", {}, "Not found"), h("p", {}, message)));
  }

  let bannerDown = false;
  function banner(connected, text) {
    const el = document.getElementById("conn");
    if (!el) return;
    bannerDown = !connected;
    el.textContent = connected ? "" : text || "NATS is unreachable — showing the last data; reconnecting…";
    el.className = connected ? "" : "down";
    document.body.classList.toggle("offline", !connected);
  }

  async function getJson(url) {
    const res = await fetch(url, { headers: { accept: "application/json" } });
    const data = await res.json().catch(() => ({ error: `${url}: HTTP ${res.status}` }));
    if (!res.ok) {
      const err = new Error(data.error || `HTTP ${res.status}`);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  /** Polls `load` every `ms`, with the banner on failure (and the last render kept). */
  function poll(ms, load) {
    let stopped = false;
    const tick = async () => {
      if (stopped) return;
      try {
        const again = await load();
        if (again === false) return;
        if (bannerDown) banner(true);
      } catch (err) {
        if (err.status === 404 || err.status === 400) return showError(err.message);
        banner(false, err.status === 503 ? err.message : "rung ui is unreachable — retrying…");
      }
      setTimeout(tick, ms);
    };
    tick();
    return () => {
      stopped = true;
    };
  }

  // ------------------------------------------------------------------------------------------------
  // Charts

  /** uPlot needs one x array: the union of every series' x, each series null where it has no value. */
  function aligned(curves, keys) {
    const xs = new Set();
    for (const k of keys) for (const t of curves.get(k).keys()) xs.add(t);
    const x = [...xs].sort((a, b) => a - b);
    return [x, ...keys.map((k) => x.map((t) => (curves.get(k).has(t) ? curves.get(k).get(t) : null)))];
  }

  function chartWidth(el) {
    return Math.max(280, Math.floor(el.getBoundingClientRect().width || 600));
  }

  /**
   * Learning curves: one series per trial (metric against the time attribute), coloured by the trial's
   * best value (viridis), stopped trials dimmed with a cross where they were stopped, the rungs marked.
   *
   * Built once; an update with the same trials (or more: a new trial's series is added in place) only
   * hands uPlot the new data (`setData`), and each series' colour, width and dash are read from `styles`
   * when uPlot draws, so a trial stopped or a best value changed needs no new chart. Only the log-scale
   * toggle and a trial gone make a new chart.
   */
  function curvesChart(el, opts) {
    let plot = null;
    let keys = [];
    let log = false;
    let last = null;
    /** Per series (0 = the first trial): how it is drawn now. */
    let styles = [];
    const hover = opts.hover;

    function stylesOf(trials, summary, curves) {
      const byTrial = new Map(summary.trials.map((t) => [t.trial, t]));
      let lo = Number.POSITIVE_INFINITY;
      let hi = Number.NEGATIVE_INFINITY;
      for (const t of summary.trials)
        if (t.bestValue !== null) {
          lo = Math.min(lo, t.bestValue);
          hi = Math.max(hi, t.bestValue);
        }
      const rank = (v) => {
        if (v === null || !(hi > lo)) return 0.5;
        const x = (v - lo) / (hi - lo);
        return summary.metric.mode === "max" ? x : 1 - x;
      };
      return trials.map((k, i) => {
        const t = byTrial.get(k);
        // A trial stopped at its first rung has one point: no line, so show the point.
        let n = 0;
        for (const v of curves.get(k).values()) if (v !== null) n++;
        const stopped = Boolean(t && t.stoppedAt !== null);
        const color = trials.length <= OKABE_ITO.length ? OKABE_ITO[i % OKABE_ITO.length] : viridis(rank(t ? t.bestValue : null));
        return {
          stroke: stopped ? withAlpha(color, 0.3) : color,
          width: stopped ? 1 : 1.75,
          dash: stopped ? [4, 3] : undefined,
          few: n <= 2,
          pointStroke: stopped ? withAlpha(color, 0.6) : color,
        };
      });
    }

    function seriesOpts(label, i) {
      const st = styles[i];
      return {
        label,
        stroke: (_u, si) => (styles[si - 1] ? styles[si - 1].stroke : "#999"),
        width: st ? st.width : 1.75,
        dash: st ? st.dash : undefined,
        spanGaps: true,
        points: {
          show: (_u, si) => Boolean(styles[si - 1] && styles[si - 1].few),
          size: 6,
          stroke: (_u, si) => (styles[si - 1] ? styles[si - 1].pointStroke : "#999"),
          fill: "#fff",
        },
      };
    }

    function withAlpha(color, a) {
      if (color.startsWith("rgba")) return color.replace(/[\d.]+\)$/, `${a})`);
      const n = Number.parseInt(color.slice(1), 16);
      return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
    }

    function marks(u) {
      const ctx = u.ctx;
      const { top, height, left, width } = u.bbox;
      ctx.save();
      ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
      ctx.fillStyle = "#555";
      ctx.strokeStyle = "rgba(0,0,0,0.35)";
      ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
      (last ? last.summary.rungs : []).forEach((r, i) => {
        const x = u.valToPos(r, "x", true);
        if (!(x >= left && x <= left + width)) return;
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
        ctx.fillText(`rung ${i}`, x + 3 * devicePixelRatio, top + 12 * devicePixelRatio);
      });
      ctx.setLineDash([]);
      // A cross where each stopped trial was stopped.
      if (last) {
        ctx.strokeStyle = "rgba(213,94,0,0.8)";
        ctx.lineWidth = 1.5 * devicePixelRatio;
        const s = 4 * devicePixelRatio;
        for (const t of last.summary.trials) {
          if (t.stoppedAt === null) continue;
          const c = last.curves.get(t.trial);
          const v = c ? c.get(t.stoppedAt) : undefined;
          if (v === undefined || v === null || (log && v <= 0)) continue;
          const x = u.valToPos(t.stoppedAt, "x", true);
          const y = u.valToPos(v, "y", true);
          ctx.beginPath();
          ctx.moveTo(x - s, y - s);
          ctx.lineTo(x + s, y + s);
          ctx.moveTo(x + s, y - s);
          ctx.lineTo(x - s, y + s);
          ctx.stroke();
        }
      }
      ctx.restore();
    }

    function dataOf(curves) {
      const data = aligned(curves, keys);
      return log ? [data[0], ...data.slice(1).map((s) => s.map((v) => (v !== null && v > 0 ? v : null)))] : data;
    }

    function create(summary) {
      const o = {
        width: chartWidth(el),
        height: 340,
        legend: { show: false },
        cursor: { focus: { prox: 24 }, points: { show: false } },
        focus: { alpha: 0.25 },
        scales: { x: { time: false }, y: { distr: log ? 3 : 1 } },
        axes: [
          { label: `${summary.timeAttr} (time attribute)`, stroke: "#333" },
          { label: `${summary.metric.name} (metric, ${summary.metric.mode})`, stroke: "#333", size: 60 },
        ],
        series: [{ label: summary.timeAttr }, ...keys.map(seriesOpts)],
        hooks: {
          draw: [marks],
          setSeries: [
            (_u, i) => {
              if (!hover || !last) return;
              const s = last.summary;
              const t = i === null || i === undefined ? null : s.trials.find((x) => x.trial === keys[i - 1]);
              hover.textContent = t
                ? `${t.trial}: ${t.state}, best ${s.metric.name} ${num(t.bestValue)} · ${Object.entries(t.params)
                    .map(([k, v]) => `${k}=${typeof v === "number" ? num(v, 3) : v}`)
                    .join(" ")}`
                : "";
            },
          ],
        },
      };
      if (plot) plot.destroy();
      el.replaceChildren();
      plot = new uPlot(o, dataOf(last.curves), el);
      el.dataset.builds = String(Number(el.dataset.builds || "0") + 1);
    }

    /** Whether every key of `old` is in `next` (both sorted): the chart can grow instead of being made again. */
    function grownFrom(old, next) {
      let j = 0;
      for (const k of next) if (j < old.length && old[j] === k) j++;
      return j === old.length;
    }

    function update(summary, curves, fresh) {
      last = { summary, curves };
      const next = [...curves.keys()].filter((k) => [...curves.get(k).values()].some((v) => v !== null)).sort();
      const before = keys;
      styles = stylesOf(next, summary, curves);
      if (!plot || fresh || !grownFrom(before, next)) {
        keys = next;
        create(summary);
      } else {
        keys = next;
        // New trials' series, each at its place in the sorted order (earlier ones are in by then).
        const had = new Set(before);
        next.forEach((k, i) => {
          if (!had.has(k)) plot.addSeries(seriesOpts(k, i), i + 1);
        });
        styles.forEach((st, i) => {
          const s = plot.series[i + 1];
          s.width = st.width;
          s.dash = st.dash;
        });
        plot.setData(dataOf(curves));
      }
      el.dataset.series = String(keys.length);
      let points = 0;
      for (const k of keys) for (const v of curves.get(k).values()) if (v !== null) points++;
      el.dataset.points = String(points);
      el.dataset.log = String(log);
    }

    return {
      update(summary, curves) {
        update(summary, curves, false);
      },
      setLog(on) {
        log = on;
        if (last) update(last.summary, last.curves, true);
      },
      resize() {
        if (plot) plot.setSize({ width: chartWidth(el), height: 340 });
      },
    };
  }

  /** Parallel coordinates: one axis per parameter and one for the metric; one line per trial with a value. */
  function parallelCoordinates(canvas, summary, onPick) {
    const trials = summary.trials.filter((t) => t.bestValue !== null);
    const axes = [
      ...summary.params.map((p) => ({ ...p, get: (t) => t.params[p.name] })),
      { name: `${summary.metric.name} (best)`, kind: "linear", get: (t) => t.bestValue, metric: true },
    ];
    for (const a of axes) {
      if (a.kind === "choice") {
        const vals = a.values && a.values.length ? a.values : [...new Set(trials.map((t) => String(a.get(t))))];
        a.values = vals;
        a.pos = (v) => (vals.length <= 1 ? 0.5 : vals.indexOf(String(v)) / (vals.length - 1));
        a.ticks = vals.map((v) => [v, a.pos(v)]);
        continue;
      }
      const nums = trials.map((t) => Number(a.get(t))).filter((v) => Number.isFinite(v) && (a.kind !== "log" || v > 0));
      const f = a.kind === "log" ? Math.log10 : (x) => x;
      let lo = Math.min(...nums.map(f));
      let hi = Math.max(...nums.map(f));
      if (!Number.isFinite(lo)) [lo, hi] = [0, 1];
      if (hi === lo) [lo, hi] = [lo - 0.5, hi + 0.5];
      a.pos = (v) => (f(Number(v)) - lo) / (hi - lo);
      const inv = (p) => (a.kind === "log" ? 10 ** (lo + p * (hi - lo)) : lo + p * (hi - lo));
      a.ticks = [0, 0.5, 1].map((p) => [num(inv(p), 3), p]);
    }
    const metricAxis = axes[axes.length - 1];
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(280, Math.floor(canvas.parentElement.getBoundingClientRect().width || 600));
    const height = 320;
    canvas.width = width * dpr;
    canvas.height = height * dpr;
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, width, height);
    const padX = 60;
    const top = 34;
    const bottom = height - 28;
    const xOf = (i) => (axes.length === 1 ? width / 2 : padX + (i * (width - 2 * padX)) / (axes.length - 1));
    // 4 % inside each end, so a line at an axis' minimum or maximum is not hidden by the frame.
    const yOf = (p) => bottom - (0.04 + 0.92 * p) * (bottom - top);
    const mode = summary.metric.mode;
    const lines = [];
    // Worst first, so the best lines are drawn on top.
    const sorted = [...trials].sort((a, b) => (mode === "max" ? a.bestValue - b.bestValue : b.bestValue - a.bestValue));
    for (const t of sorted) {
      const pts = axes.map((a, i) => [xOf(i), yOf(a.pos(a.get(t)))]);
      if (pts.some((p) => !Number.isFinite(p[1]))) continue;
      const m = metricAxis.pos(t.bestValue);
      ctx.strokeStyle = viridis(mode === "max" ? m : 1 - m, t.stoppedAt !== null ? 0.35 : 0.9);
      ctx.lineWidth = t.stoppedAt !== null ? 1 : 2;
      ctx.beginPath();
      for (const [i, [x, y]] of pts.entries()) {
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      }
      ctx.stroke();
      lines.push({ trial: t.trial, pts });
    }
    ctx.fillStyle = "#222";
    ctx.strokeStyle = "#444";
    ctx.lineWidth = 1;
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center";
    axes.forEach((a, i) => {
      const x = xOf(i);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, bottom);
      ctx.stroke();
      ctx.fillText(`${a.name}${a.kind === "log" ? " (log)" : ""}`, x, top - 14);
      ctx.textAlign = i === axes.length - 1 ? "right" : "left";
      for (const [label, p] of a.ticks)
        ctx.fillText(String(label).slice(0, 12), x + (i === axes.length - 1 ? -4 : 4), yOf(p) + 4);
      ctx.textAlign = "center";
    });
    canvas.dataset.lines = String(lines.length);
    canvas.dataset.axes = String(axes.length);
    canvas.setAttribute(
      "aria-label",
      `parallel coordinates: ${lines.length} trials across ${axes.map((a) => a.name).join(", ")}; colour is ${summary.metric.name} (yellow best)`,
    );
    canvas.onclick = (ev) => {
      const r = canvas.getBoundingClientRect();
      const x = ev.clientX - r.left;
      const y = ev.clientY - r.top;
      let best = null;
      for (const l of lines)
        for (let i = 1; i < l.pts.length; i++) {
          const [x0, y0] = l.pts[i - 1];
          const [x1, y1] = l.pts[i];
          if (x < x0 || x > x1) continue;
          const d = Math.abs(y - (y0 + ((y1 - y0) * (x - x0)) / (x1 - x0 || 1)));
          if (d < 6 && (!best || d < best.d)) best = { d, trial: l.trial };
        }
      if (best && onPick) onPick(best.trial);
    };
  }

  // ------------------------------------------------------------------------------------------------
  // Pages

  function studiesPage() {
    poll(5000, async () => {
      const data = await getJson("/api/studies");
      banner(data.connected);
      const rows = data.studies.map((s) => [
        h("a", { href: studyHref(s.name) }, s.name),
        h("span", { class: `state ${s.state}` }, s.state),
        s.best ? `${num(s.best.value)} (${s.best.trial})` : "–",
        `${s.metric.name} (${s.metric.mode})`,
        `${s.counts.running} running · ${s.counts.completed} completed · ${s.counts.stopped} stopped · ${s.counts.failed} failed · ${s.planned} planned`,
        hours(s.gpuHours * 3600),
        s.cost === null ? "–" : `$${s.cost.toFixed(2)}`,
        when(s.createdAt),
      ]);
      main.replaceChildren(
        h("h1", {}, "Studies"),
        rows.length === 0
          ? h("p", {}, "No studies in this mesh yet — start one with: rung study run configs/digits-asha.yaml")
          : table(
              "every study in this mesh",
              ["study", "state", "best", "metric", "trials", "GPU time", "cost", "created"],
              rows,
              {
                cls: "studies",
              },
            ),
      );
    });
  }

  function studyView(opts) {
    const curves = new Map();
    let summary = null;
    // Points received from the server (where a reconnecting stream asks to go on from).
    let received = 0;
    let logScale = false;
    const hover = h("p", { class: "hover muted", "aria-live": "polite" });
    const curvesEl = h("div", { id: "curves", class: "chart" });
    const logBox = h("input", {
      type: "checkbox",
      id: "log-scale",
      onchange: (e) => {
        logScale = e.target.checked;
        chart.setLog(logScale);
      },
    });
    const chart = curvesChart(curvesEl, { hover });
    const pc = h("canvas", { id: "parcoords", role: "img", tabindex: 0 });
    let pcDrawn = null;
    const head = h("header", {});
    const rest = h("div", { class: "grid" });
    main.replaceChildren(
      head,
      section(
        "Learning curves",
        h("div", { class: "controls" }, h("label", { for: "log-scale" }, logBox, " log scale")),
        curvesEl,
        hover,
      ),
      section(
        "Parallel coordinates",
        h(
          "p",
          { class: "muted" },
          "one line per trial with a result; colour is its best metric (viridis: yellow is best); click a line to open its trial",
        ),
        h("div", { class: "pc-wrap" }, pc),
      ),
      rest,
    );
    const trialLink = (t) => (opts.static ? t : h("a", { href: trialHref(summary.study, t) }, t));

    function addPoints(points) {
      for (const [trial, t, v] of points) {
        let c = curves.get(trial);
        if (!c) {
          c = new Map();
          curves.set(trial, c);
        }
        c.set(t, v);
      }
      received += points.length;
    }

    function render() {
      if (!summary) return;
      const s = summary;
      const r = s.report;
      const c = r.counts;
      document.title = `${s.study} · rung`;
      head.replaceChildren(
        h("h1", {}, s.study),
        h(
          "p",
          { class: "lead" },
          h("span", { class: `state ${s.state}` }, s.state),
          ` · ${s.scheduler} on ${s.metric.name} (${s.metric.mode}) · ${c.running} running · ${c.queued} queued · ${c.completed} completed · ${c.stopped} stopped · ${c.failed} failed · ${r.planned} planned`,
        ),
        r.best
          ? h(
              "p",
              { class: "best" },
              "best: ",
              trialLink(r.best.trial),
              ` ${s.metric.name} = ${num(r.best.value)} at ${s.timeAttr} ${num(r.best.t)}`,
            )
          : h("p", { class: "muted" }, "no result yet"),
      );
      const funnelMax = Math.max(1, ...r.funnel.map((f) => f.trials));
      const savings = s.savings;
      const g = r.gpuTime;
      const parts = [
        section(
          "Leaderboard",
          table(
            `best ${s.metric.name} first`,
            ["#", "trial", s.metric.name, s.timeAttr, "state", "params"],
            r.leaderboard.map((row) => [
              String(row.rank),
              trialLink(row.trial),
              num(row.value),
              num(row.t),
              row.state,
              // Each k=v may break after its "=", so a narrow window wraps the column instead of cutting it.
              Object.entries(row.params).flatMap(([k, v], i) => [
                i ? " " : null,
                h("span", { class: "param" }, `${k}=`, h("wbr"), typeof v === "number" ? num(v, 3) : String(v)),
              ]),
            ]),
            { cls: "leaderboard" },
          ),
        ),
        section(
          "Rung funnel",
          h(
            "ol",
            { class: "funnel", "aria-label": `trials reaching each ${s.timeAttr}` },
            r.funnel.map((f) =>
              h(
                "li",
                {},
                h("span", { class: "label" }, `${s.timeAttr} ≥ ${f.milestone}`),
                h("span", { class: "bar", style: `width:${Math.max(2, (100 * f.trials) / funnelMax)}%` }),
                h("span", { class: "n" }, `${f.trials} trial${f.trials === 1 ? "" : "s"}`),
              ),
            ),
          ),
        ),
        section(
          "GPU time",
          h(
            "p",
            {},
            `Early stopping saved about ${hours(savings.savedGpuSeconds)} (${pct(savings.savedShare)} of ${hours(savings.fullGpuSeconds)} had every trial run to the end).`,
          ),
          // One row per kind of time: two columns read at any width, where eight side by side did not.
          table(
            "where the GPU time went",
            ["", "GPU-hours"],
            [
              ["completed", gpuH(g.completedGpuS)],
              ["stopped", gpuH(g.stoppedGpuS)],
              ["failed", gpuH(g.failedGpuS)],
              ["running", gpuH(g.runningGpuS)],
              ["idle", g.idleGpuS === null ? "–" : gpuH(g.idleGpuS)],
              ["total", gpuH(g.totalGpuS)],
              ["cost", r.cost.total === null ? "–" : `$${r.cost.total.toFixed(2)}`],
            ],
            { cls: "gpu-time" },
          ),
        ),
        section(
          "Diagnosis",
          s.telemetryWindowMs
            ? h(
                "p",
                { class: "muted" },
                `diagnosis and idle GPU time from the last ${Math.round(s.telemetryWindowMs / 60000)} min of telemetry (rung study report reads all of it)`,
              )
            : null,
          r.findings.length === 0
            ? h(
                "p",
                { class: "muted" },
                r.telemetry.gpuMessages > 0 ? "no bottleneck found" : "no telemetry for this study (yet)",
              )
            : h(
                "ul",
                { class: "findings" },
                r.findings.map((f) =>
                  h(
                    "li",
                    { class: `finding ${f.severity}` },
                    h("strong", {}, `${f.severity}: `),
                    f.summary,
                    f.advice && f.advice.length
                      ? h(
                          "ul",
                          { class: "advice" },
                          f.advice.map((a) => h("li", {}, a)),
                        )
                      : null,
                  ),
                ),
              ),
        ),
        r.failures.length
          ? section(
              "Failed trials",
              table(
                "each failed trial's reason",
                ["trial", "reason", "log tail"],
                r.failures.map((f) => [trialLink(f.trial), f.reason, h("pre", {}, (f.logTail || []).join("\n"))]),
              ),
            )
          : null,
      ];
      rest.replaceChildren(...parts.filter((p) => p !== null));
      chart.update(s, curves);
      // Drawn again only when what it shows changed (a best value, a stop, a new trial, the width).
      const pcWidth = Math.floor(pc.parentElement.getBoundingClientRect().width || 600);
      const pcKey = JSON.stringify([
        pcWidth,
        s.params,
        s.metric,
        s.trials.filter((t) => t.bestValue !== null).map((t) => [t.trial, t.bestValue, t.stoppedAt !== null, t.params]),
      ]);
      if (pcKey !== pcDrawn) {
        pcDrawn = pcKey;
        parallelCoordinates(pc, s, opts.static ? null : (t) => (location.href = trialHref(s.study, t)));
        pc.dataset.draws = String(Number(pc.dataset.draws || "0") + 1);
      }
    }

    return {
      summary(s) {
        summary = s;
        render();
      },
      points(p) {
        addPoints(p);
      },
      render,
      resize() {
        // The curves keep their chart across renders (only new data goes in), so its size is set here.
        chart.resize();
        if (summary) render();
      },
      count: () => received,
    };
  }

  function studyPage() {
    if (isStatic) {
      const data = JSON.parse(embedded.textContent);
      const view = studyView({ static: true });
      view.points(data.points);
      view.summary(data.summary);
      addEventListener(
        "resize",
        debounce(() => view.resize(), 200),
      );
      return;
    }
    const study = body.dataset.study;
    getJson(`/api/study/${enc(study)}`)
      .then((data) => {
        const view = studyView({ static: false });
        view.points(data.points);
        view.summary(data.summary);
        addEventListener(
          "resize",
          debounce(() => view.resize(), 200),
        );
        const open = () => {
          const es = new EventSource(`/api/study/${enc(study)}/stream?from=${view.count()}`);
          let pending = null;
          es.addEventListener("connection", (e) => banner(JSON.parse(e.data).connected));
          es.addEventListener("points", (e) => {
            view.points(JSON.parse(e.data));
            if (pending === null) pending = setTimeout(flush, 50);
          });
          es.addEventListener("summary", (e) => {
            pending = pending || setTimeout(flush, 50);
            latest = JSON.parse(e.data);
          });
          let latest = null;
          const flush = () => {
            pending = null;
            if (latest) view.summary(latest);
            else view.render();
            latest = null;
          };
          es.onopen = () => banner(true);
          es.onerror = () => {
            // Reconnect ourselves, asking for the points after those the page has (EventSource's own
            // retry would ask for its first URL's again).
            banner(false, "lost the connection to rung ui — retrying…");
            es.close();
            setTimeout(open, 2000);
          };
        };
        open();
      })
      .catch((err) => {
        if (err.status === 404 || err.status === 400) showError(err.message);
        else {
          banner(false, err.message);
          setTimeout(studyPage, 3000);
        }
      });
  }

  function debounce(fn, ms) {
    let t = null;
    return () => {
      clearTimeout(t);
      t = setTimeout(fn, ms);
    };
  }

  function trialPage() {
    const { study, trial } = body.dataset;
    let plot = null;
    addEventListener(
      "resize",
      debounce(() => {
        const el = document.getElementById("trial-curve");
        if (plot && el) plot.setSize({ width: chartWidth(el), height: 260 });
      }, 200),
    );
    poll(3000, async () => {
      const d = await getJson(`/api/study/${enc(study)}/trial/${enc(trial)}`);
      const curveEl = h("div", { id: "trial-curve", class: "chart" });
      const out = h(
        "pre",
        { id: "output", class: "terminal", tabindex: 0, "aria-label": "terminal output" },
        d.output.text || "(no output yet)",
      );
      main.replaceChildren(
        h("p", { class: "crumbs" }, h("a", { href: studyHref(study) }, study), " / ", trial),
        h("h1", {}, `${trial}`),
        h(
          "p",
          { class: "lead" },
          h("span", { class: `state ${d.state}` }, d.state),
          ` · best ${d.metric.name} ${num(d.bestValue)}${d.endReason ? ` · ${d.endReason}` : ""}`,
        ),
        section("Curve", curveEl),
        section(
          "Parameters",
          table(
            "its parameters",
            ["parameter", "value"],
            Object.entries(d.params).map(([k, v]) => [k, String(v)]),
          ),
        ),
        section(
          "Attempts",
          table(
            "each attempt",
            ["#", "status", "agent", "GPUs", "queued", "started", "ended", "exit", "reason"],
            d.attempts.map((a) => [
              String(a.attempt),
              a.status,
              a.agent || "–",
              a.gpus.join(",") || "–",
              when(a.queuedAt),
              when(a.startedAt),
              when(a.endedAt),
              a.exitCode === null ? "–" : String(a.exitCode),
              a.reason || "",
            ]),
          ),
        ),
        section(
          `Terminal output${d.output.attempt ? ` (attempt ${d.output.attempt}${d.output.truncated ? ", its end" : ""})` : ""}`,
          out,
        ),
        section(
          "Events",
          table(
            "every event of the trial, in order",
            ["time", "event", "attempt", "from", "details"],
            d.events.map((e) => [
              new Date(e.ts).toLocaleTimeString(),
              e.type,
              e.attempt === null ? "–" : String(e.attempt),
              e.from,
              e.text,
            ]),
          ),
        ),
      );
      const xs = d.points.map((p) => p[1]);
      const ys = d.points.map((p) => p[2]);
      if (plot) plot.destroy();
      plot = new uPlot(
        {
          width: chartWidth(curveEl),
          height: 260,
          legend: { show: false },
          scales: { x: { time: false } },
          axes: [{ label: `${d.timeAttr} (time attribute)` }, { label: `${d.metric.name} (metric, ${d.metric.mode})`, size: 60 }],
          series: [{}, { label: trial, stroke: OKABE_ITO[0], width: 2, points: { show: true, size: 5 } }],
        },
        [xs, ys],
        curveEl,
      );
      curveEl.dataset.points = String(xs.length);
      out.scrollTop = out.scrollHeight;
      const ended = ["completed", "failed", "cancelled"].includes(d.state) || /^(stopped|diverged)@/.test(d.state);
      return !ended;
    });
  }

  function meshPage() {
    let plot = null;
    poll(5000, async () => {
      const d = await getJson("/api/mesh");
      banner(d.connected);
      const gpuRows = d.gpus.map((g) => [
        `${g.agent} / ${g.index}`,
        g.name || "–",
        h(
          "span",
          { class: "meter", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": g.utilization ?? 0 },
          h("span", { style: `width:${((g.utilization ?? 0) * 0.05).toFixed(2)}rem` }),
          ` ${g.utilization === null ? "–" : `${g.utilization} %`}`,
        ),
        g.memoryUsedMiB === null
          ? "–"
          : `${(g.memoryUsedMiB / 1024).toFixed(1)} / ${((g.memoryTotalMiB || 0) / 1024).toFixed(1)} GiB`,
        g.powerW === null ? "–" : `${Math.round(g.powerW)} W`,
        pct(g.dataWaitShare),
        g.trial ? h("a", { href: trialHref(g.study, g.trial) }, `${g.study}/${g.trial}`) : "idle",
      ]);
      const timelineEl = h("div", { id: "timeline", class: "chart" });
      main.replaceChildren(
        h("h1", {}, "Mesh"),
        h(
          "p",
          { class: "lead" },
          `${d.agents.length} agent(s) · ${d.gpus.length} GPU(s) · ${d.gpus.filter((g) => g.trial).length} busy`,
        ),
        section(
          "Agents",
          table(
            "live agents",
            ["agent", "state", "host", "GPUs", "free", "price", "advert"],
            d.agents.map((a) => [
              a.agent + (a.fake ? " (simulated GPUs)" : ""),
              a.state,
              a.host,
              String(a.gpus),
              String(a.freeGpus),
              a.pricePerGpuHour === null ? "–" : `$${a.pricePerGpuHour}/GPU-h`,
              new Date(a.updatedAt).toLocaleTimeString(),
            ]),
          ),
        ),
        section(
          "GPUs",
          table("every GPU now", ["GPU", "model", "utilization", "memory", "power", "data wait", "trial"], gpuRows, {
            cls: "gpus",
          }),
        ),
        section(
          "Utilization, last hour",
          h("p", { class: "muted" }, `mean per ${d.timeline.bucketMs / 1000} s, one line per GPU`),
          timelineEl,
        ),
      );
      const keys = Object.keys(d.timeline.series);
      const n = keys.length ? d.timeline.series[keys[0]].length : 0;
      // A mesh younger than the hour: start at its first sample (five minutes at least), not at an empty hour.
      const firstSeen = Array.from({ length: n }, (_, i) => i).find((i) => keys.some((k) => d.timeline.series[k][i] != null));
      const from = Math.max(0, Math.min(firstSeen ?? 0, n - Math.ceil(300_000 / d.timeline.bucketMs)));
      const xs = Array.from({ length: n - from }, (_, i) => (d.timeline.start + (from + i) * d.timeline.bucketMs) / 1000);
      if (plot) plot.destroy();
      plot = new uPlot(
        {
          width: chartWidth(timelineEl),
          height: 240,
          legend: { show: keys.length <= 16 },
          scales: { y: { range: [0, 100] } },
          axes: [{ label: "time" }, { label: "GPU utilization (%)", size: 60 }],
          series: [
            {},
            ...keys.map((k, i) => ({
              label: k,
              stroke: OKABE_ITO[i % OKABE_ITO.length],
              width: 1.5,
              spanGaps: false,
              points: { show: true, size: 4 },
            })),
          ],
        },
        [xs, ...keys.map((k) => d.timeline.series[k].slice(from))],
        timelineEl,
      );
      timelineEl.dataset.series = String(keys.length);
    });
  }

  const pages = { studies: studiesPage, study: studyPage, trial: trialPage, mesh: meshPage };
  (pages[page] || studiesPage)();
})();
