/**
 * Me: name and phone (WeChat's getPhoneNumber button, or typed), subscribe to
 * charge-finished and alarm messages, links to accounts / history, and the way into the
 * operators' pages. API: GET/PATCH /auth/me, POST /auth/me/phone (the server trades the
 * button's code at WeChat), POST /me/subscriptions (via utils/subscribe.js).
 */
const api = require('../../utils/api')
const auth = require('../../utils/auth')
const errors = require('../../utils/errors')
const fmt = require('../../utils/format')
const subscribe = require('../../utils/subscribe')
const validate = require('../../utils/validate')
const wxp = require('../../utils/wxp')

Component({
  data: { user: null, phoneInput: '', staff: false, error: '', hasTemplates: false },

  methods: {
    onShow() {
      this.setData({ hasTemplates: subscribe.templates().length > 0 })
      return this.load()
    },

    async load() {
      try {
        const me = await api.me()
        this.setData({
          user: { name: me.display_name || '微信用户', phone: me.phone ? fmt.maskNumber(me.phone) : '',
            role: me.role },
          staff: auth.isStaff(me.role),
          error: '',
        })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
    },

    onInput(e) {
      this.setData({ phoneInput: e.detail.value })
    },

    async onGetPhoneNumber(e) {
      const code = e && e.detail && e.detail.code
      if (!code) return
      try {
        await api.bindPhone(code)
        wxp.toast('手机号已绑定', 'success')
        await this.load()
      } catch (err) {
        // 422: WeChat refused the code, or the number is not a mainland mobile
        wxp.toast(err.status === 422 ? '未能获取手机号，请手动填写' : errors.userMessage(err))
      }
    },

    async onSavePhone() {
      const problem = validate.phone(this.data.phoneInput)
      if (problem) {
        this.setData({ error: '请输入 11 位手机号' })
        return
      }
      try {
        await api.updateMe({ phone: this.data.phoneInput.trim() })
        wxp.toast('已保存', 'success')
        await this.load()
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
    },

    async onSubscribe() {
      const kinds = await subscribe.askForChargeMessages()
      wxp.toast(kinds.length ? '已订阅充电通知' : '未订阅')
    },

    onOpen(e) {
      wx.navigateTo({ url: e.currentTarget.dataset.url })
    },

    onOperators() {
      const url = this.data.staff ? '/pages/ops/index/index' : '/pages/ops/login/login'
      wx.navigateTo({ url })
    },

    async onLogout() {
      await auth.logout()
      wx.reLaunch({ url: '/pages/index/index' })
    },
  },
})
