import { randomBytes, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  buildStudyReport,
  listStudies,
  loadStudy,
  loadTrialPage,
  MeshWatch,
  readAdverts,
  StudyNotFoundError,
  StudyWatch,
  studyStateWord,
  TrialNotFoundError,
} from "@rung/coordinator";
import { type Logger, type MeshNames, validToken } from "@rung/protocol";
import { uiMetrics } from "./metrics.js";
import { assets, shellPage } from "./pages.js";

/**
 * `rung ui`: a read-only web server over one NATS connection. Pages are shells that the browser code
 * (assets/ui/app.js) fills from the JSON API; a study page is kept live over server-sent events, one
 * `StudyWatch` per study shared by every browser that shows it and closed a while after the last
 * one leaves. Nothing here writes to NATS.
 *
 *   GET /                          studies            GET /api/studies
 *   GET /study/NAME                a study (live)     GET /api/study/NAME, /api/study/NAME/stream (SSE)
 *   GET /study/NAME/trial/TRIAL    a trial            GET /api/study/NAME/trial/TRIAL
 *   GET /mesh                      agents and GPUs    GET /api/mesh
 *   GET /metrics                   Prometheus         GET /api/health
 *
 * Cost per update, whatever the number of browsers: a study's summary is built and serialized once
 * per push (at most once a second, less often when building it is slow) and the same text written
 * to every browser; curve points are sent once each, the text shared by browsers at the same place.
 */

export interface UiServerOptions {
  readonly nc: NatsConnection;
  readonly names: MeshNames;
  /** Default 127.0.0.1. Anything but loopback needs `token`. */
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /**
   * Required on every request (`?token=` once, then a cookie) when not null. Without one (loopback),
   * requests must name a loopback host in their Host header (no DNS rebinding).
   */
  readonly token: string | null;
  readonly log: Logger;
  /** How long a study's watch outlives its last browser. Default 30 s. */
  readonly keepWatchMs?: number;
}

export interface UiServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Loopback addresses, where `rung ui` needs no token. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Whether a Host header (`name[:port]`, `[v6][:port]`) names a loopback host, whatever the port. */
export function isLoopbackHostHeader(header: string | undefined): boolean {
  if (!header) return false;
  const h = header.trim().toLowerCase();
  const name = h.startsWith("[") ? h.slice(1, h.indexOf("]")) : h.replace(/:\d*$/, "");
  return isLoopback(name.replace(/\.$/, ""));
}

export function newToken(): string {
  return randomBytes(18).toString("base64url");
}

interface SseClient {
  readonly res: ServerResponse;
  /** Curve points sent so far (the index to send from next). */
  sent: number;
  /** Headers written and the first update sent: pushes go to it from then on. */
  ready: boolean;
}

/**
 * One study's watch, shared by every browser showing it. `phase`: `loading` (the study is read;
 * browsers that arrive wait), `ready` (pushes go out), `closed` (dropped: a new one is made for the
 * next browser). The idle timer runs only while `ready` and without browsers.
 */
interface SharedWatch {
  phase: "loading" | "ready" | "closed";
  watch: Promise<StudyWatch>;
  clients: Set<SseClient>;
  idle: NodeJS.Timeout | undefined;
  push: NodeJS.Timeout | undefined;
  lastPush: number;
  /** How long the last summary took to build and serialize: pushes keep to 10 % of the CPU. */
  buildMs: number;
  /** The summary as last built, with the watch's version it was built at. */
  built: { version: number; at: number; summary: ReturnType<StudyWatch["summary"]>; json: string } | undefined;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  sendJsonText(res, status, JSON.stringify(body));
}

function sendJsonText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  res.end(text);
}

function sseText(event: string, json: string): string {
  return `event: ${event}\ndata: ${json}\n\n`;
}

function nameOf(raw: string, what: "study" | "trial"): string {
  let name: string;
  try {
    name = decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, `the ${what} name in the URL is not valid percent-encoding`);
  }
  try {
    return validToken(name, what);
  } catch (err) {
    throw new HttpError(400, (err as Error).message);
  }
}

/** The request's path without its query (which may hold the token): what logs may say. */
function pathOf(req: IncomingMessage): string {
  return (req.url ?? "/").split("?")[0] as string;
}

/** A summary rebuilt within this long of the last one is shared as it is (its GPU-seconds tick with time). */
const SUMMARY_FRESH_MS = 1000;
/** A study's line on the studies page is folded again at most this often while it keeps changing. */
const LIST_REFOLD_MS = 10_000;

interface StudyListEntry {
  name: string;
  state: string;
  createdAt: number;
  metric: unknown;
  scheduler: string;
  planned: number;
  best: unknown;
  counts: unknown;
  gpuHours: number;
  cost: number | null;
}

export async function startUiServer(o: UiServerOptions): Promise<UiServer> {
  const { nc, names, log } = o;
  if (!isLoopback(o.host) && !o.token) throw new Error(`--host ${o.host} is not loopback: a token is required`);
  let connected = true;
  const mesh = await MeshWatch.open(nc, names, {
    onError: (err) => log.warn({ err: (err as Error).message }, "reading the last hour of telemetry failed"),
  });
  const watches = new Map<string, SharedWatch>();
  /** StudyWatches opened and not yet closed (what `rung_ui_study_watches` says). */
  let openWatches = 0;
  let browsers = 0;
  const metrics = uiMetrics(mesh, { studyWatches: () => openWatches, browsers: () => browsers });
  const keepMs = o.keepWatchMs ?? 30_000;
  const closedWatches = new WeakSet<StudyWatch>();
  const closeWatch = (x: StudyWatch) => {
    if (closedWatches.has(x)) return;
    closedWatches.add(x);
    void x
      .close()
      .catch(() => {})
      .finally(() => {
        openWatches -= 1;
      });
  };

  const broadcast = (event: string, data: unknown) => {
    const text = sseText(event, JSON.stringify(data));
    for (const w of watches.values()) for (const c of w.clients) if (c.ready) c.res.write(text);
  };
  // The banner: every page hears about the connection (SSE), and /api/health says it to the others.
  const statusLoop = (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect" || s.type === "staleConnection") {
        if (connected) log.warn("lost NATS; the pages show a banner until it is back");
        connected = false;
        broadcast("connection", { connected });
      } else if (s.type === "reconnect") {
        connected = true;
        log.info("NATS is back");
        broadcast("connection", { connected });
      }
    }
  })().catch(() => {});

  const dropWatch = (study: string, w: SharedWatch) => {
    if (w.phase === "closed") return;
    w.phase = "closed";
    if (watches.get(study) === w) watches.delete(study);
    if (w.idle) clearTimeout(w.idle);
    if (w.push) clearTimeout(w.push);
    w.idle = undefined;
    w.push = undefined;
    for (const c of w.clients) c.res.end();
    void w.watch.then(closeWatch, () => {});
  };

  /** The study's summary, built (and serialized) at most once per change or per second. */
  const summaryOf = (w: SharedWatch, watch: StudyWatch): NonNullable<SharedWatch["built"]> => {
    const now = Date.now();
    const b = w.built;
    if (b && b.version === watch.version && now - b.at < SUMMARY_FRESH_MS) return b;
    const summary = watch.summary(now);
    const json = JSON.stringify(summary);
    w.buildMs = Date.now() - now;
    w.built = { version: watch.version, at: now, summary, json };
    return w.built;
  };

  /** One update to every ready browser: one summary text for all, the points text shared by those at the same place. */
  const pushAll = (w: SharedWatch, watch: StudyWatch, only?: SseClient) => {
    const summary = sseText("summary", summaryOf(w, watch).json);
    const pointsFrom = new Map<number, { text: string; next: number }>();
    for (const c of only ? [only] : w.clients) {
      if (!c.ready || c.res.destroyed) continue;
      c.res.write(summary);
      let p = pointsFrom.get(c.sent);
      if (!p) {
        const { points, next } = watch.pointsSince(c.sent);
        p = { text: points.length > 0 ? sseText("points", JSON.stringify(points)) : "", next };
        pointsFrom.set(c.sent, p);
      }
      if (p.text) c.res.write(p.text);
      c.sent = p.next;
    }
  };

  /** Starts the idle timer of a ready watch nobody shows. */
  const release = (study: string, w: SharedWatch) => {
    if (w.phase === "ready" && w.clients.size === 0 && !w.idle) w.idle = setTimeout(() => dropWatch(study, w), keepMs);
  };
  const use = (w: SharedWatch) => {
    if (w.idle) clearTimeout(w.idle);
    w.idle = undefined;
  };

  function sharedWatch(study: string): SharedWatch {
    const have = watches.get(study);
    if (have) return have;
    const w: SharedWatch = {
      phase: "loading",
      clients: new Set(),
      idle: undefined,
      push: undefined,
      lastPush: 0,
      buildMs: 0,
      built: undefined,
      watch: Promise.resolve(undefined as unknown as StudyWatch),
    };
    // Pushes at most once a second (a burst of reports is one update), and at most 10 % of the time
    // when a summary is slow to build (a huge study).
    const changed = () => {
      if (w.push || w.phase !== "ready") return;
      const gap = Math.max(1000, 10 * w.buildMs);
      const wait = Math.max(0, gap - (Date.now() - w.lastPush));
      w.push = setTimeout(async () => {
        w.push = undefined;
        if (w.phase !== "ready") return;
        w.lastPush = Date.now();
        pushAll(w, await w.watch);
      }, wait);
    };
    w.watch = StudyWatch.open(nc, names, study, {
      onChange: changed,
      onError: (err) => log.debug({ study, err: (err as Error).message }, "reading the study's telemetry failed; trying again"),
      onEnded: (err) => {
        log.warn({ study, err: (err as Error).message }, "following the study failed; browsers reconnect and it starts again");
        dropWatch(study, w);
      },
    });
    w.watch.then(
      (watch) => {
        openWatches += 1;
        if (w.phase === "closed") return closeWatch(watch);
        w.phase = "ready";
        // The idle timer starts now, not while the study loads (a slow load is not "idle").
        release(study, w);
      },
      () => {
        w.phase = "closed";
        if (watches.get(study) === w) watches.delete(study);
      },
    );
    watches.set(study, w);
    return w;
  }

  // The studies page: one in-flight listing shared by every poll; each study's line kept until the
  // study changes (its record, or its number of stored events), from a live watch when one is open.
  const listCache = new Map<string, { events: number; record: string; at: number; entry: StudyListEntry }>();
  let listing: Promise<StudyListEntry[]> | undefined;
  let listed: { at: number; body: StudyListEntry[] } | undefined;

  async function studyEntry(
    name: string,
    createdAt: number,
    recordKey: string,
    adverts: Awaited<ReturnType<typeof readAdverts>>,
  ) {
    const w = watches.get(name);
    if (w?.phase === "ready") {
      const watch = await w.watch;
      const r = buildStudyReport(
        { record: watch.record, spec: watch.spec, state: watch.state, planned: watch.planned },
        [],
        adverts,
      );
      return listEntry(name, watch.stateWord, createdAt, r);
    }
    const events = await StudyWatch.eventCount(nc, names, name);
    const have = listCache.get(name);
    const now = Date.now();
    if (have && have.record === recordKey && (have.events === events || now - have.at < LIST_REFOLD_MS)) return have.entry;
    const loaded = await loadStudy(nc, names, name);
    const entry = listEntry(name, studyStateWord(loaded), createdAt, buildStudyReport(loaded, [], adverts));
    listCache.set(name, { events, record: recordKey, at: now, entry });
    return entry;
  }

  function listEntry(
    name: string,
    state: string,
    createdAt: number,
    report: ReturnType<typeof buildStudyReport>,
  ): StudyListEntry {
    return {
      name,
      state,
      createdAt,
      metric: report.metric,
      scheduler: report.scheduler,
      planned: report.planned,
      best: report.best,
      counts: report.counts,
      gpuHours: report.cost.gpuHours,
      cost: report.cost.total,
    };
  }

  function studiesList(): Promise<StudyListEntry[]> {
    if (listed && Date.now() - listed.at < 3000) return Promise.resolve(listed.body);
    listing ??= (async () => {
      try {
        const adverts = await readAdverts(nc, names);
        const records = await listStudies(nc, names);
        const out: StudyListEntry[] = [];
        for (const r of records) {
          // The record changes with its state; the lease is what makes a running study "detached".
          const key = `${r.state}/${r.specHash}/${r.id ?? ""}`;
          out.push(await studyEntry(r.name, r.createdAt, key, adverts));
        }
        const gone = new Set(records.map((r) => r.name));
        for (const name of listCache.keys()) if (!gone.has(name)) listCache.delete(name);
        listed = { at: Date.now(), body: out };
        return out;
      } finally {
        listing = undefined;
      }
    })();
    return listing;
  }

  let cookieName = "rung_token";
  function authorized(req: IncomingMessage, url: URL, res: ServerResponse): boolean {
    if (!o.token) return true;
    const want = Buffer.from(o.token, "utf8");
    // Lengths in bytes: timingSafeEqual throws on buffers of different lengths.
    const same = (got: string | null | undefined) => {
      if (got === null || got === undefined) return false;
      const b = Buffer.from(got, "utf8");
      return b.length === want.length && timingSafeEqual(b, want);
    };
    const fromQuery = url.searchParams.get("token");
    if (same(fromQuery)) {
      res.setHeader("set-cookie", `${cookieName}=${encodeURIComponent(o.token)}; HttpOnly; SameSite=Strict; Path=/`);
      return true;
    }
    // Prometheus (`authorization` in its scrape config) sends it as a bearer token.
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
    if (same(bearer)) return true;
    const raw = new RegExp(`(?:^|;\\s*)${cookieName}=([^;]+)`).exec(req.headers.cookie ?? "")?.[1];
    let cookie: string | undefined;
    try {
      cookie = raw === undefined ? undefined : decodeURIComponent(raw);
    } catch {
      cookie = undefined;
    }
    return same(cookie);
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== "GET" && req.method !== "HEAD") throw new HttpError(405, "rung ui is read-only: only GET");
    // Without a token, a page of another site whose name resolves to 127.0.0.1 (DNS rebinding) could
    // read everything: only requests addressed to a loopback name are served.
    if (!o.token && !isLoopbackHostHeader(req.headers.host))
      throw new HttpError(403, "rung ui on loopback answers only requests for localhost, 127.0.0.1 or [::1]");
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://ui");
    } catch {
      throw new HttpError(400, "that is not a URL rung ui understands");
    }
    if (!authorized(req, url, res))
      throw new HttpError(401, "this rung ui needs its token: open the URL with ?token= that it printed at start");
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const parts = path.split("/").filter((p) => p !== "");
    const page = (kind: string, title: string, params: Record<string, string> = {}) => {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
      res.end(shellPage(kind, title, params, null));
    };
    if (path === "/") return page("studies", "studies");
    if (path === "/mesh") return page("mesh", "mesh");
    if (parts[0] === "study" && parts.length === 2) {
      const study = nameOf(parts[1] as string, "study");
      return page("study", study, { study });
    }
    if (parts[0] === "study" && parts.length === 4 && parts[2] === "trial") {
      const study = nameOf(parts[1] as string, "study");
      const trial = nameOf(parts[3] as string, "trial");
      return page("trial", `${study}/${trial}`, { study, trial });
    }
    if (parts[0] === "assets" && parts.length === 2) {
      const a = assets().get(parts[1] as string);
      if (!a) throw new HttpError(404, `no asset ${parts[1]}`);
      res.writeHead(200, { "content-type": a.type, "cache-control": "no-cache" });
      res.end(a.body);
      return;
    }
    if (path === "/metrics") {
      res.writeHead(200, { "content-type": metrics.registry.contentType });
      res.end(await metrics.registry.metrics());
      return;
    }
    if (path === "/api/health") return sendJson(res, 200, { connected });
    if (path === "/api/studies") return sendJson(res, 200, { connected, studies: await studiesList() });
    if (path === "/api/mesh") return sendJson(res, 200, { connected, ...mesh.data() });
    if (parts[0] === "api" && parts[1] === "study" && parts.length >= 3) {
      const study = nameOf(parts[2] as string, "study");
      if (parts.length === 3) {
        const w = sharedWatch(study);
        const watch = await w.watch;
        const { points } = watch.pointsSince(0);
        return sendJsonText(res, 200, `{"summary":${summaryOf(w, watch).json},"points":${JSON.stringify(points)}}`);
      }
      if (parts.length === 4 && parts[3] === "stream") return stream(study, url, res);
      if (parts.length === 5 && parts[3] === "trial") {
        const trial = nameOf(parts[4] as string, "trial");
        return sendJson(res, 200, await loadTrialPage(nc, names, study, trial));
      }
    }
    throw new HttpError(404, `nothing at ${path}`);
  }

  async function stream(study: string, url: URL, res: ServerResponse): Promise<void> {
    const w = sharedWatch(study);
    const from = Number(url.searchParams.get("from") ?? "0");
    const c: SseClient = { res, sent: Number.isInteger(from) && from >= 0 ? from : 0, ready: false };
    // Registered before the study loads: a tab closed meanwhile must still let the watch go.
    let beat: NodeJS.Timeout | undefined;
    browsers += 1;
    w.clients.add(c);
    use(w);
    res.on("close", () => {
      browsers -= 1;
      clearInterval(beat);
      w.clients.delete(c);
      release(study, w);
    });
    const watch = await w.watch;
    if (res.destroyed || w.phase === "closed") {
      res.end();
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
    res.write(sseText("connection", JSON.stringify({ connected })));
    c.ready = true;
    pushAll(w, watch, c);
    beat = setInterval(() => res.write(": keep-alive\n\n"), 15_000);
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      let status = 500;
      if (err instanceof HttpError) status = err.status;
      else if (err instanceof StudyNotFoundError || err instanceof TrialNotFoundError) status = 404;
      else if (!connected) status = 503;
      const message =
        status === 503 ? "NATS is unreachable; rung ui keeps trying and the page recovers by itself" : (err as Error).message;
      if (status >= 500) log.warn({ path: pathOf(req), err: (err as Error).message }, "request failed");
      if (res.headersSent || res.destroyed) res.end();
      else sendJson(res, status, { error: message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  // Per port: two rung ui on one host (each its own token) must not overwrite each other's cookie.
  cookieName = `rung_token_${port}`;
  const hostInUrl = o.host.includes(":") ? `[${o.host}]` : o.host;
  return {
    url: `http://${hostInUrl}:${port}/${o.token ? `?token=${encodeURIComponent(o.token)}` : ""}`,
    port,
    close: async () => {
      for (const [study, w] of [...watches.entries()]) dropWatch(study, w);
      metrics.close();
      mesh.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      void statusLoop;
    },
  };
}
