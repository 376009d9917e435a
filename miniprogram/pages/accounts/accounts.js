/**
 * The bound charging accounts with their IC cards: bind another, unbind, report a card
 * lost (blocks it), change the keypad PIN.
 * API: GET /charging-accounts, DELETE /me/bindings/{id}, PATCH /cards/{id}.
 */
const api = require('../../utils/api')
const errors = require('../../utils/errors')
const wallet = require('../../utils/wallet')
const wxp = require('../../utils/wxp')

Component({
  data: { loading: true, accounts: [], error: '' },

  methods: {
    onShow() {
      return this.load()
    },

    async load() {
      this.setData({ loading: true, error: '' })
      try {
        const raw = (await api.accounts()) || []
        this.setData({ accounts: raw.filter((a) => a.kind !== 'temporary').map(wallet.accountRow) })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      } finally {
        this.setData({ loading: false })
      }
    },

    onBind() {
      wx.navigateTo({ url: '/pages/bind/bind' })
    },

    onChangePin(e) {
      wx.navigateTo({ url: `/pages/pin/pin?account_id=${e.currentTarget.dataset.id}` })
    },

    async onUnbind(e) {
      const id = Number(e.currentTarget.dataset.id)
      const ok = await wxp.confirm('解除绑定', '解绑后将不能用此账户扫码充电，余额仍保留在账户中。', '解绑')
      if (!ok) return
      try {
        await api.unbind(id)
        wxp.toast('已解绑', 'success')
        await this.load()
      } catch (err) {
        wxp.toast(errors.userMessage(err))
      }
    },

    async onBlockCard(e) {
      const id = Number(e.currentTarget.dataset.id)
      const ok = await wxp.confirm('挂失 IC 卡', '挂失后此卡不能再刷卡充电，找回后请到物业解挂。', '挂失')
      if (!ok) return
      try {
        await api.setCardStatus(id, 'blocked')
        wxp.toast('已挂失', 'success')
        await this.load()
      } catch (err) {
        wxp.toast(errors.userMessage(err))
      }
    },
  },
})
