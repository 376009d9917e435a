/** @jest-environment jsdom */
const { configure, render, serve, settle, text } = require('../helpers/render')

const ME = { id: 1, role: 'resident', username: null, display_name: '', phone: null,
  phone_verified_at: null, property_company_id: null, power_company_id: null }

beforeAll(() => configure({ subscribeTemplates: { chargeFinished: 'TPL-DONE', alarm: 'TPL-ALARM' } }))

describe('me page', () => {
  test('the phone from WeChat\'s getPhoneNumber button', async () => {
    let sent = null
    let me = { ...ME }
    const wx = serve({
      'GET /api/v1/auth/me': () => ({ statusCode: 200, data: me }),
      'POST /api/v1/auth/me/phone': (o) => {
        sent = o.data
        me = { ...me, phone: '13812345678', phone_verified_at: '2026-01-01T00:00:00Z' }
        return { statusCode: 200, data: me }
      },
    })
    const page = render('pages/me/me')
    await page.instance.onShow()
    await settle()
    expect(text(page)).toContain('未绑定手机号')
    await page.instance.onGetPhoneNumber({ detail: { errMsg: 'getPhoneNumber:fail user deny' } })
    expect(sent).toBeNull() // refused in WeChat's dialog: nothing to send
    await page.instance.onGetPhoneNumber({ detail: { code: 'phone-code-1' } })
    await settle()
    expect(sent).toEqual({ code: 'phone-code-1' })
    expect(wx.calls.toasts).toContain('手机号已绑定')
    expect(text(page)).toContain('手机 138****5678')
  })

  test('a code WeChat refused: type the number instead', async () => {
    const wx = serve({
      'GET /api/v1/auth/me': ME,
      'POST /api/v1/auth/me/phone': () => ({ statusCode: 422, data: { code: 'invalid_input',
        message: 'WeChat rejected the phone number code', details: { field: 'code', errcode: 40029 } } }),
    })
    const page = render('pages/me/me')
    await page.instance.onShow()
    await settle()
    await page.instance.onGetPhoneNumber({ detail: { code: 'stale' } })
    expect(wx.calls.toasts).toEqual(['未能获取手机号，请手动填写'])
    expect(text(page)).toContain('未绑定手机号')
  })

  test('subscribing tells the server what WeChat answered for each template', async () => {
    let sent = null
    const wx = serve({
      'GET /api/v1/auth/me': ME,
      'POST /api/v1/me/subscriptions': (o) => {
        sent = o.data
        return { statusCode: 200, data: { subscriptions: [
          { template_id: 'TPL-DONE', kind: 'charge_finished', available: 1 }] } }
      },
    })
    wx.requestSubscribeMessage = (o) => o.success({ errMsg: 'requestSubscribeMessage:ok',
      'TPL-DONE': 'accept', 'TPL-ALARM': 'reject' })
    const page = render('pages/me/me')
    await page.instance.onShow()
    await settle()
    expect(text(page)).toContain('订阅充电完成与告警通知')
    page.querySelectorAll('.row')[2].dispatchEvent('tap') // the subscribe row
    await settle()
    expect(sent).toEqual({ subscriptions: [
      { kind: 'charge_finished', template_id: 'TPL-DONE', result: 'accept' },
      { kind: 'alarm', template_id: 'TPL-ALARM', result: 'reject' }] })
    expect(wx.calls.toasts).toEqual(['已订阅充电通知'])
  })
})
