/** Form checks mirroring the server's (app/api/schemas.py), with Chinese messages. */

const PHONE = /^1[3-9]\d{9}$/
const PIN = /^\d{6}$/

function phone(value) {
  return PHONE.test(String(value || '').trim()) ? '' : '请输入 11 位手机号（充电账户号）'
}

function pin(value) {
  return PIN.test(String(value || '')) ? '' : '密码应为 6 位数字'
}

function newPin(oldPin, next, again) {
  const bad = pin(next)
  if (bad) return `新${bad}`
  if (next !== again) return '两次输入的新密码不一致'
  if (next === oldPin) return '新密码不能与原密码相同'
  return ''
}

module.exports = { phone, pin, newPin, PHONE, PIN }
