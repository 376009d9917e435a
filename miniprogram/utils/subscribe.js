/**
 * Subscribe messages (订阅消息): charge finished, and alarms for the resident's charges.
 * wx.requestSubscribeMessage must run inside a tap handler; each accept lets the server
 * send ONE message, so the page asks again before each charge. The answers are told to
 * the server (POST /me/subscriptions): it stores one "credit" per accept and spends one per
 * message it sends (an alarm on the user's charge; the charge finished, at settlement).
 */
const config = require('./config')
const api = require('./api')

function templates() {
  const t = config.subscribeTemplates || {}
  return [['charge_finished', t.chargeFinished], ['alarm', t.alarm]].filter(([, id]) => !!id)
}

/** Ask; resolves with the accepted kinds (never rejects: charging goes on regardless). */
function askForChargeMessages() {
  const wanted = templates()
  if (!wanted.length || typeof wx.requestSubscribeMessage !== 'function') {
    return Promise.resolve([])
  }
  return new Promise((resolve) => {
    wx.requestSubscribeMessage({
      tmplIds: wanted.map(([, id]) => id),
      success: (res) => {
        const subs = wanted.map(([kind, id]) => ({ kind, template_id: id, result: res[id] }))
        const accepted = subs.filter((s) => s.result === 'accept')
        if (accepted.length) api.subscribe(subs).catch(() => {})
        resolve(accepted.map((s) => s.kind))
      },
      fail: () => resolve([]),
    })
  })
}

module.exports = { askForChargeMessages, templates }
