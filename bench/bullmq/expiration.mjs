#!/usr/bin/env node
// Baseline for the expiration benchmark: the original Node design.
//
//   order:created  ->  queue.add({orderId}, {delay: expiresAt - now})   (BullMQ delayed job in Redis)
//   job fires      ->  Worker publishes {orderId} on JetStream subject
//                      "expiration:complete" with Nats-Msg-Id
//                      "expiration:complete:<orderId>"
//
// A separate NATS connection runs an ordered JetStream consumer on the stream
// and records when each event arrives; lag = receive time - expiresAt.
//
// Prints ONE JSON line on stdout; diagnostics go to stderr.
//
// Usage:
//   node expiration.mjs --n 1000 --spread-ms 10000 \
//     --nats nats://127.0.0.1:4222 --redis redis://127.0.0.1:6379 --stream NAME [--subject S]
// Every flag may also be given as an env var: N, SPREAD_MS, NATS_URL, REDIS_URL,
// STREAM, SUBJECT, LEAD_MS, CONCURRENCY, ENQUEUE_CONCURRENCY.

import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { connect, headers, JSONCodec, DeliverPolicy } from 'nats';

const DEFAULT_SUBJECT = 'expiration:complete';
const MAX_N = 1_000_000;
const MAX_SPREAD_MS = 3_600_000;

const now = () => performance.timeOrigin + performance.now(); // wall clock, sub-ms
const log = (...a) => console.error('[bullmq-bench]', ...a);

function options() {
  const { values } = parseArgs({
    options: {
      n: { type: 'string' },
      'spread-ms': { type: 'string' },
      nats: { type: 'string' },
      redis: { type: 'string' },
      stream: { type: 'string' },
      subject: { type: 'string' },
      'lead-ms': { type: 'string' },
      concurrency: { type: 'string' },
      'enqueue-concurrency': { type: 'string' },
    },
    strict: true,
  });
  const e = process.env;
  const int = (v, d, name) => {
    const x = Number(v ?? d);
    if (!Number.isInteger(x) || x < 0) throw new Error(`bad --${name}: ${v}`);
    return x;
  };
  const o = {
    n: int(values.n ?? e.N, 1000, 'n'),
    spreadMs: int(values['spread-ms'] ?? e.SPREAD_MS, 10000, 'spread-ms'),
    leadMs: int(values['lead-ms'] ?? e.LEAD_MS, 2000, 'lead-ms'),
    concurrency: int(values.concurrency ?? e.CONCURRENCY, 50, 'concurrency'),
    enqueueConcurrency: int(values['enqueue-concurrency'] ?? e.ENQUEUE_CONCURRENCY, 16, 'enqueue-concurrency'),
    natsUrl: values.nats ?? e.NATS_URL ?? 'nats://127.0.0.1:4222',
    redisUrl: values.redis ?? e.REDIS_URL ?? 'redis://127.0.0.1:6379',
    stream: values.stream ?? e.STREAM ?? `BENCH_BULLMQ_${process.pid}`,
    // Another subject lets the script share a NATS server with a stream that owns expiration:complete.
    subject: values.subject ?? e.SUBJECT ?? DEFAULT_SUBJECT,
  };
  if (o.n < 1 || o.n > MAX_N) throw new Error(`--n must be in 1..${MAX_N}`);
  if (o.spreadMs > MAX_SPREAD_MS) throw new Error(`--spread-ms must be <= ${MAX_SPREAD_MS}`);
  if (o.concurrency < 1 || o.enqueueConcurrency < 1) throw new Error('concurrencies must be >= 1');
  if (!/^[A-Za-z0-9_-]+$/.test(o.stream)) throw new Error(`bad stream name: ${o.stream}`);
  if (!/^[A-Za-z0-9_:.-]+$/.test(o.subject)) throw new Error(`bad subject: ${o.subject}`);
  for (const u of [o.natsUrl, o.redisUrl]) {
    const host = new URL(u).hostname.replace(/^\[|\]$/g, '');
    if (!['127.0.0.1', 'localhost', '::1'].includes(host)) {
      throw new Error(`only loopback addresses are allowed, got ${u}`);
    }
  }
  return o;
}

function percentile(sorted, p) {
  // nearest-rank
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}
const r1 = (x) => (x == null ? null : Math.round(x * 10) / 10);

async function main() {
  const o = options();
  const SUBJECT = o.subject;
  const runId = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  const queueName = `expiration-bench-${runId}`; // unique per run
  const jc = JSONCodec();
  const connection = { url: o.redisUrl, maxRetriesPerRequest: null };

  // --- NATS: publisher connection (the expiration service) and consumer connection
  // (stands in for the orders service).
  const pubNc = await connect({ servers: o.natsUrl, name: 'bench-expiration-service' });
  const subNc = await connect({ servers: o.natsUrl, name: 'bench-orders-listener' });
  const jsm = await pubNc.jetstreamManager();
  try {
    await jsm.streams.info(o.stream);
  } catch {
    await jsm.streams.add({ name: o.stream, subjects: [SUBJECT] });
  }
  const js = pubNc.jetstream();

  // --- receive side: ordered consumer, only new messages.
  const expiresAt = new Map(); // orderId -> due time (ms)
  const lags = [];
  const seen = new Set();
  let lastRecv = 0;
  let dupes = 0;
  let resolveAll;
  const allReceived = new Promise((r) => (resolveAll = r));
  // No filterSubjects: the stream holds only SUBJECT, and multi-filter consumers
  // need nats-server >= 2.10 (this machine's is 2.9.10, where consume() hangs).
  const consumer = await subNc.jetstream().consumers.get(o.stream, {
    deliver_policy: DeliverPolicy.New,
  });
  const messages = await consumer.consume();
  const consumeLoop = (async () => {
    for await (const m of messages) {
      const t = now();
      let orderId;
      try {
        orderId = jc.decode(m.data).orderId;
      } catch {
        continue;
      }
      const due = expiresAt.get(orderId);
      if (due === undefined) continue; // not from this run
      if (seen.has(orderId)) { dupes++; continue; }
      seen.add(orderId);
      lags.push(t - due);
      lastRecv = t;
      if (seen.size === o.n) resolveAll();
    }
  })();

  // --- the expiration service: Worker with defaults except concurrency.
  const worker = new Worker(
    queueName,
    async (job) => {
      const h = headers();
      h.set('Nats-Msg-Id', `${SUBJECT}:${job.data.orderId}`);
      await js.publish(SUBJECT, jc.encode({ orderId: job.data.orderId }), { headers: h });
    },
    { connection, concurrency: o.concurrency },
  );
  let failed = 0;
  worker.on('failed', (job, err) => { failed++; if (failed <= 5) log('job failed', job?.id, err?.message); });
  worker.on('error', (err) => log('worker error', err?.message));
  await worker.waitUntilReady();
  const queue = new Queue(queueName, { connection });
  await queue.waitUntilReady();

  // --- enqueue N delayed jobs, due times spread evenly over spread-ms starting lead-ms from now.
  const base = now() + o.leadMs;
  const step = o.n > 1 ? o.spreadMs / (o.n - 1) : 0;
  const ids = [];
  for (let i = 0; i < o.n; i++) {
    const orderId = `${runId}-${i}`;
    ids.push(orderId);
    expiresAt.set(orderId, base + i * step);
  }
  const firstDue = base;
  const lastDue = base + (o.n - 1) * step;
  let late = 0;
  let next = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: Math.min(o.enqueueConcurrency, o.n) }, async () => {
      while (next < o.n) {
        const orderId = ids[next++];
        const delay = Math.ceil(expiresAt.get(orderId) - now()); // never before expiresAt
        if (delay <= 0) late++;
        await queue.add('order:expiration', { orderId }, { delay: Math.max(0, delay) });
      }
    }),
  );
  const enqueueS = (now() - t0) / 1000;
  log(`enqueued ${o.n} jobs in ${(enqueueS * 1000).toFixed(0)} ms` + (late ? ` (${late} already due)` : ''));

  // --- wait for all, or timeout after (lead + spread + 30 s).
  const deadline = firstDue + o.spreadMs + 30_000;
  let timer;
  const timedOut = new Promise((r) => { timer = setTimeout(() => r('timeout'), Math.max(0, deadline - now())); });
  const outcome = await Promise.race([allReceived.then(() => 'ok'), timedOut]);
  clearTimeout(timer);
  if (outcome === 'timeout') log(`timeout: received ${seen.size}/${o.n}`);

  const sorted = lags.slice().sort((a, b) => a - b);
  const window = (lastRecv - firstDue) / 1000;
  const result = {
    system: 'bullmq',
    n: o.n,
    delivered: seen.size,
    enqueue_per_s: r1(o.n / enqueueS),
    lag_ms: { p50: r1(percentile(sorted, 50)), p99: r1(percentile(sorted, 99)), max: r1(sorted.at(-1) ?? null) },
    jobs_per_s: seen.size > 0 && window > 0 ? r1(seen.size / window) : null,
  };
  log(`details: spread_ms=${o.spreadMs} lead_ms=${o.leadMs} worker_concurrency=${o.concurrency} ` +
      `enqueue_concurrency=${o.enqueueConcurrency} min_lag_ms=${r1(sorted[0])} ` +
      `last_due_to_last_recv_ms=${r1(lastRecv - lastDue)} duplicates=${dupes} failed=${failed} queue=${queueName}`);

  // --- cleanup
  try { await worker.close(); } catch (e) { log('worker close', e?.message); }
  try { await queue.obliterate({ force: true }); } catch (e) { log('obliterate', e?.message); }
  try { await queue.close(); } catch (e) { log('queue close', e?.message); }
  messages.stop();
  await consumeLoop.catch(() => {});
  // The stream is deleted at the end whether or not this run created it.
  try { await jsm.streams.delete(o.stream); } catch (e) { log('stream delete', e?.message); }
  await pubNc.drain().catch(() => {});
  await subNc.drain().catch(() => {});

  process.stdout.write(JSON.stringify(result) + '\n');
  return outcome === 'ok' ? 0 : 2;
}

main().then(
  (code) => process.exit(code),
  (err) => { log('fatal', err?.stack ?? err); process.exit(1); },
);
