/**
 * Polling a resource until it is done, with back-off on errors. The mini-program has no
 * EventSource, so the live charging page polls GET /charging-sessions/{id} instead of the
 * server-sent events endpoint. Timers are injectable for tests.
 */

const MAX_DELAY_MS = 30000

function backoff(interval, failures) {
  return Math.min(interval * 2 ** Math.min(failures, 4), MAX_DELAY_MS)
}

/**
 * fetch(): Promise<data>; onData(data); onError(err, failures); isDone(data) → stop.
 * Returns {start, stop, now (poll at once), running}.
 */
function createPoller({ fetch, onData, onError, isDone, interval = 3000, timers } = {}) {
  const t = timers || { setTimeout, clearTimeout }
  let timer = null
  let running = false
  let inFlight = false
  let failures = 0

  function schedule(delay) {
    if (!running) return
    if (timer) t.clearTimeout(timer)
    timer = t.setTimeout(tick, delay)
  }

  async function tick() {
    timer = null
    if (!running || inFlight) return
    inFlight = true
    let data
    try {
      data = await fetch()
      failures = 0
    } catch (err) {
      failures += 1
      inFlight = false
      if (onError) onError(err, failures)
      schedule(backoff(interval, failures))
      return
    }
    inFlight = false
    if (!running) return
    if (onData) onData(data)
    if (isDone && isDone(data)) {
      running = false
      return
    }
    schedule(interval)
  }

  return {
    start() {
      if (running) return
      running = true
      failures = 0
      schedule(0)
    },
    stop() {
      running = false
      if (timer) t.clearTimeout(timer)
      timer = null
    },
    now() {
      if (running) schedule(0)
    },
    get running() {
      return running
    },
  }
}

module.exports = { createPoller, backoff, MAX_DELAY_MS }

/**
 * Ask `fetch` up to `tries` times, `interval` ms apart, until `done(data)`; resolves with
 * the last data (done or not). Errors count as "not yet" until the last try.
 */
async function waitUntil(fetch, done, { tries = 10, interval = 1000, timers } = {}) {
  const t = timers || { setTimeout }
  let last
  for (let i = 0; i < tries; i += 1) {
    try {
      last = await fetch()
      if (done(last)) return last
    } catch (err) {
      if (i === tries - 1) throw err
    }
    if (i < tries - 1) await new Promise((resolve) => t.setTimeout(resolve, interval))
  }
  return last
}

module.exports.waitUntil = waitUntil
