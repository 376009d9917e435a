/**
 * Change the 6-digit PIN typed at the pile's keypad. Too many wrong PINs lock the account
 * for a while (the server answers 423 account_locked).
 * API: POST /charging-accounts/{id}/pin.
 */
const api = require('../../utils/api')
const errors = require('../../utils/errors')
const validate = require('../../utils/validate')
const wxp = require('../../utils/wxp')

Component({
  data: { accountId: null, oldPin: '', newPin: '', again: '', saving: false, error: '' },

  methods: {
    onLoad(query) {
      this.setData({ accountId: Number(query && query.account_id) })
    },

    onInput(e) {
      this.setData({ [e.currentTarget.dataset.field]: e.detail.value, error: '' })
    },

    async onSubmit() {
      const { accountId, oldPin, newPin, again } = this.data
      const problem = validate.pin(oldPin) ? `原${validate.pin(oldPin)}`
        : validate.newPin(oldPin, newPin, again)
      if (problem) {
        this.setData({ error: problem })
        return false
      }
      this.setData({ saving: true, error: '' })
      try {
        await api.changePin(accountId, oldPin, newPin)
        wxp.toast('密码已修改', 'success')
        wx.navigateBack()
        return true
      } catch (err) {
        const message = err.code === 'unauthenticated' || err.code === 'invalid_input'
          ? '原密码不正确' : errors.userMessage(err)
        this.setData({ error: message })
        return false
      } finally {
        this.setData({ saving: false })
      }
    },
  },
})
