/**
 * One pile: each port's status and the session running on it, with a remote stop.
 * API: GET /piles/{id}, GET /charging-sessions?community_id&status=active,
 * POST /charging-sessions/{id}/stop.
 */
const api = require('../../../utils/api')
const auth = require('../../../utils/auth')
const errors = require('../../../utils/errors')
const fmt = require('../../../utils/format')
const ops = require('../../../utils/ops')
const wxp = require('../../../utils/wxp')

Component({
  data: { pileId: null, pile: null, ports: [], canStop: false, error: '' },

  methods: {
    onLoad(query) {
      this.setData({ pileId: Number(query && query.pile_id),
        canStop: auth.canManage(api.role()) })
      return this.load()
    },

    async load() {
      try {
        const pile = await api.pile(this.data.pileId)
        const active = await api.sessions({ community_id: pile.community_id, status: 'active',
          limit: 200 })
        const byPort = {}
        active.filter((s) => s.pile_id === pile.id).forEach((s) => { byPort[s.port_id] = s })
        const row = ops.pileRow(pile)
        this.setData({
          pile: row,
          ports: row.ports.map((p) => {
            const s = byPort[p.id]
            return { ...p, sessionId: s ? s.session_id : '',
              since: s ? fmt.shortDateTime(s.started_at) : p.since,
              cost: s ? fmt.yuan(s.cost_fen) : '' }
          }),
          error: '',
        })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
    },

    async onStop(e) {
      const sessionId = e.currentTarget.dataset.session
      const number = e.currentTarget.dataset.number
      const ok = await wxp.confirm('远程停止', `确定停止 ${number} 号插座的充电吗？用户将按已充电量结算。`, '停止')
      if (!ok) return null
      try {
        const s = await api.stopCharge(sessionId)
        wxp.toast('已发送停止指令', 'success')
        await this.load()
        return s
      } catch (err) {
        wxp.toast(errors.userMessage(err))
        return null
      }
    },
  },
})
