/** @jest-environment jsdom */
const { configure, render, serve, settle, text, tap } = require('../helpers/render')

const SID = 'S0123456789abcdef'
const base = {
  session_id: SID, status: 'active', method: 'app', pile_serial: 'P0001', port_number: 2,
  power_w: 183, energy_wh: 456, cost_fen: 46, max_amount_fen: 2000, elapsed_s: 1805,
  remaining_s: 5400, available_fen: 3000, refund_fen: null, stop_reason: null,
  started_at: '2025-11-24T10:00:00Z', ended_at: null,
}

beforeAll(() => configure({ pollIntervalMs: 10 }))

test('the live page shows the figures, stops on tap, then opens the receipt', async () => {
  let state = { ...base }
  const wx = serve({
    [`GET /api/v1/charging-sessions/${SID}`]: () => ({ statusCode: 200, data: state }),
    [`POST /api/v1/charging-sessions/${SID}/stop`]: () => {
      state = { ...state, status: 'stopping' }
      return { statusCode: 202, data: state }
    },
  })
  const page = render('pages/charging/charging')
  page.instance.onLoad({ session_id: SID })
  await settle()
  const shown = text(page)
  expect(shown).toContain('充电中')
  expect(shown).toContain('0.46 度')
  expect(shown).toContain('183 W')
  expect(shown).toContain('0.46元')
  expect(shown).toContain('00:30:05')
  expect(shown).toContain('1小时30分')
  expect(shown).toContain('P0001 · 2号插座')
  expect(shown).toContain('本次最多消费 20.00 元')

  await tap(page, '.stop-btn')
  expect(wx.calls.modals[0].title).toBe('停止充电')
  expect(wx.calls.requests.some((r) => r.method === 'POST' && r.url.endsWith('/stop'))).toBe(true)
  expect(text(page)).toContain('正在停止')
  expect(page.querySelector('.stop-btn')).toBeFalsy()

  state = { ...state, status: 'settled', ended_at: '2025-11-24T10:31:00Z', stop_reason: 'user' }
  await new Promise((r) => setTimeout(r, 50))
  await settle()
  expect(wx.calls.redirectTo).toEqual([`/pages/receipt/receipt?session_id=${SID}`])
  page.instance.onUnload()
})

test('cancelling the confirmation does not stop', async () => {
  const wx = serve({ [`GET /api/v1/charging-sessions/${SID}`]: base })
  wx.modalAnswer = false
  const page = render('pages/charging/charging')
  page.instance.onLoad({ session_id: SID })
  await settle()
  await tap(page, '.stop-btn')
  expect(wx.calls.requests.filter((r) => r.method === 'POST')).toHaveLength(0)
  page.instance.onUnload()
})

test('a network hiccup shows a Chinese message and polling goes on', async () => {
  let fail = true
  serve({ [`GET /api/v1/charging-sessions/${SID}`]: () => (fail
    ? { statusCode: 502, data: '<html>bad gateway</html>' } : { statusCode: 200, data: base }) })
  const page = render('pages/charging/charging')
  page.instance.onLoad({ session_id: SID })
  await settle()
  expect(text(page)).toContain('服务器开小差了')
  fail = false
  await new Promise((r) => setTimeout(r, 60))
  await settle()
  expect(text(page)).toContain('0.46 度')
  expect(text(page)).not.toContain('服务器开小差了')
  page.instance.onUnload()
})
