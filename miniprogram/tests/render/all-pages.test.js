/**
 * @jest-environment jsdom
 *
 * Every page of app.json compiles with the official WXML compiler and renders with its
 * initial data (before any request answers), and says something sensible, not "undefined".
 */
const app = require('../../app.json')
const { render, serve, settle, text } = require('../helpers/render')

test.each(app.pages)('%s renders before its data arrives', async (page) => {
  serve({})
  const comp = render(page)
  await settle(2)
  expect(comp.dom).toBeTruthy()
  expect(text(comp)).not.toMatch(/undefined|NaN|\[object Object\]/)
})

test('pages that only read their query render it', async () => {
  serve({ 'GET /api/v1/charging-sessions': [], 'GET /api/v1/auth/me': { id: 1, role: 'resident',
    display_name: '', phone: '13900000001' } })
  const me = render('pages/me/me')
  await me.instance.onShow()
  await settle()
  expect(text(me)).toContain('微信用户')
  expect(text(me)).toContain('手机 139****0001')
  expect(text(me)).toContain('物业人员登录')
  const history = render('pages/history/history')
  await history.instance.onLoad()
  await settle()
  expect(text(history)).toContain('还没有充电记录')
})
