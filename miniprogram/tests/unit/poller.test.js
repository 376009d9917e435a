const { createPoller, backoff, waitUntil } = require('../../utils/poller')

beforeEach(() => jest.useFakeTimers())
afterEach(() => jest.useRealTimers())

async function flush() {
  for (let i = 0; i < 5; i += 1) await Promise.resolve()
}

test('polls at the interval until done, then stops', async () => {
  const states = ['starting', 'active', 'active', 'settled', 'never']
  const fetch = jest.fn(async () => ({ status: states.shift() }))
  const seen = []
  const p = createPoller({ fetch, onData: (d) => seen.push(d.status),
    isDone: (d) => d.status === 'settled', interval: 1000 })
  p.start()
  await jest.advanceTimersByTimeAsync(0)
  expect(seen).toEqual(['starting'])
  await jest.advanceTimersByTimeAsync(999)
  expect(seen).toEqual(['starting'])
  await jest.advanceTimersByTimeAsync(1)
  expect(seen).toEqual(['starting', 'active'])
  await jest.advanceTimersByTimeAsync(5000)
  expect(seen).toEqual(['starting', 'active', 'active', 'settled'])
  expect(p.running).toBe(false)
  expect(fetch).toHaveBeenCalledTimes(4)
})

test('backs off on errors and recovers', async () => {
  let fail = 3
  const fetch = jest.fn(async () => {
    if (fail > 0) {
      fail -= 1
      throw new Error('down')
    }
    return { ok: true }
  })
  const errors = []
  const p = createPoller({ fetch, onError: (e, n) => errors.push(n), onData: () => {}, interval: 1000 })
  p.start()
  await jest.advanceTimersByTimeAsync(0) // fail 1 → wait 2 s
  await jest.advanceTimersByTimeAsync(2000) // fail 2 → wait 4 s
  await jest.advanceTimersByTimeAsync(4000) // fail 3 → wait 8 s
  expect(errors).toEqual([1, 2, 3])
  await jest.advanceTimersByTimeAsync(7999)
  expect(fetch).toHaveBeenCalledTimes(3)
  await jest.advanceTimersByTimeAsync(1)
  expect(fetch).toHaveBeenCalledTimes(4)
  p.stop()
  expect(backoff(3000, 10)).toBe(30000)
})

test('stop cancels; now() polls at once', async () => {
  const fetch = jest.fn(async () => ({}))
  const p = createPoller({ fetch, interval: 10000 })
  p.start()
  await jest.advanceTimersByTimeAsync(0)
  p.now()
  await jest.advanceTimersByTimeAsync(0)
  expect(fetch).toHaveBeenCalledTimes(2)
  p.stop()
  await jest.advanceTimersByTimeAsync(60000)
  expect(fetch).toHaveBeenCalledTimes(2)
  await flush()
})

test('waitUntil returns the first done value, or the last one', async () => {
  let n = 0
  const promise = waitUntil(async () => { n += 1; return n }, (x) => x >= 3, { tries: 5, interval: 100 })
  await jest.advanceTimersByTimeAsync(1000)
  await expect(promise).resolves.toBe(3)
  n = 0
  const never = waitUntil(async () => { n += 1; return n }, () => false, { tries: 2, interval: 100 })
  await jest.advanceTimersByTimeAsync(1000)
  await expect(never).resolves.toBe(2)
})
