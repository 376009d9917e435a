/**
 * Bind a charging account the property office opened: the community (from a scanned
 * port, or scan any port of the community here), the account number (a mobile number)
 * and the 6-digit keypad PIN. API: POST /me/bindings, GET /public/ports/{code}.
 */
const api = require('../../utils/api')
const errors = require('../../utils/errors')
const qr = require('../../utils/qr')
const validate = require('../../utils/validate')
const wxp = require('../../utils/wxp')

Component({
  data: { communityId: null, communityName: '', accountNo: '', pin: '', binding: false, error: '' },

  methods: {
    onLoad(query) {
      if (query && query.community_id) {
        this.setData({ communityId: Number(query.community_id),
          communityName: decodeURIComponent(query.community_name || '') })
      }
    },

    onInput(e) {
      this.setData({ [e.currentTarget.dataset.field]: e.detail.value, error: '' })
    },

    async onScanCommunity() {
      try {
        const code = qr.portCodeFromScan(await wxp.scanCode())
        if (!code) {
          wxp.toast('这不是充电插座的二维码')
          return
        }
        const port = await api.publicPort(code)
        this.setData({ communityId: port.community_id, communityName: port.community_name })
      } catch (err) {
        if (!wxp.isCancel(err)) this.setData({ error: errors.userMessage(err) })
      }
    },

    async onSubmit() {
      const { communityId, accountNo, pin } = this.data
      const problem = !communityId ? '请先扫描小区内任一充电桩的二维码以确定小区'
        : validate.phone(accountNo) || validate.pin(pin)
      if (problem) {
        this.setData({ error: problem })
        return null
      }
      this.setData({ binding: true, error: '' })
      try {
        const account = await api.bind(communityId, accountNo.trim(), pin)
        wxp.toast('绑定成功', 'success')
        wx.navigateBack()
        return account
      } catch (err) {
        const message = err.code === 'not_found' || err.code === 'unauthenticated'
          ? '账户号或密码不正确' : errors.userMessage(err)
        this.setData({ error: message })
        return null
      } finally {
        this.setData({ binding: false })
      }
    },
  },
})
