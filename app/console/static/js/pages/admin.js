// Administration: power companies, property companies and staff users.
//
// The platform admin creates power companies, property companies (and edits their name and
// contact phone) and staff users: platform admins, power-company users and property
// operators. The power company sees its own companies read-only; a property operator who
// opens this page sees its own company and colleagues (and may add colleagues).
//
// Endpoints: GET/POST /power-companies, GET/POST /property-companies,
// PATCH /property-companies/{id}, GET/POST /staff.

import * as api from '../api.js';
import { h, mount, act, table, form, section, badge, yuan } from '../ui.js';

const rerender = () => window.dispatchEvent(new HashChangeEvent('hashchange'));

const ROLE_LABELS = {
  platform_admin: '平台管理员 platform admin',
  power_company: '供电公司 power company',
  property_operator: '物业操作员 property operator',
};

export async function render(root, ctx) {
  const admin = ctx.can('platform_admin');
  const [powers, companies, staff] = await Promise.all([
    ctx.can('platform_admin', 'power_company') ? api.get('/power-companies') : [],
    api.get('/property-companies', { limit: 200 }),
    ctx.manages() ? api.get('/staff') : null,
  ]);
  const powerById = Object.fromEntries(powers.map((p) => [p.id, p]));
  const companyById = Object.fromEntries(companies.map((c) => [c.id, c]));

  mount(root,
    h('h1', '管理 Administration'),
    admin ? null : h('p.muted', ctx.manages() ? 'Your own company and colleagues.' : '只读 Read-only view.'),
    ctx.can('platform_admin', 'power_company') ? section('供电公司 Power companies',
      powerTable(powers), admin ? newPowerForm() : null) : null,
    section('物业公司 Property companies', companyTable(ctx, companies, powerById),
      h('div#company-edit'), admin ? newCompanyForm(powers) : null),
    staff ? section('员工账号 Staff users', staffTable(staff, powerById, companyById),
      newStaffForm(ctx, powers, companies)) : null);
}

// ------------------------------------------------------------------ power companies

function powerTable(powers) {
  return table(powers, [
    ['#', (p) => p.id],
    ['名称 Name', (p) => p.name],
    ['电网电价 Grid price', (p) => (p.grid_price_fen_per_kwh === undefined ? '—'
      : `${yuan(p.grid_price_fen_per_kwh)} / kWh`)],
  ], { empty: '没有供电公司 No power companies.', rowAttrs: (p) => ({ dataset: { powerCompany: p.id } }) });
}

function newPowerForm() {
  return h('div', { style: 'margin-top:12px' }, h('h3', '新建供电公司 New power company'), form([
    { name: 'name', label: '名称 Name', required: true },
    { name: 'grid_price_fen_per_kwh', label: '电网电价 Grid price (¥ per kWh)', type: 'yuan', placeholder: '0.56' },
  ], async (v) => {
    await act(() => api.post('/power-companies', v), '已创建 Power company created');
    rerender();
  }, { submit: '创建 Create', id: 'power-company-form' }));
}

// ------------------------------------------------------------------ property companies

function companyTable(ctx, companies, powerById) {
  const columns = [
    ['#', (c) => c.id],
    ['名称 Name', (c) => h('a', { href: `#/communities?property_company_id=${c.id}` }, c.name)],
    ['供电公司 Power company', (c) => (powerById[c.power_company_id] || {}).name || `#${c.power_company_id}`],
    ['联系电话 Contact phone', (c) => c.contact_phone || '—'],
  ];
  if (ctx.manages()) {
    columns.push(['', (c) => h('button.secondary', { type: 'button', onclick: () => showCompanyEdit(c) },
      '修改 Edit')]);
  }
  return table(companies, columns, { empty: '没有物业公司 No property companies.',
    rowAttrs: (c) => ({ dataset: { propertyCompany: c.id } }) });
}

function showCompanyEdit(c) {
  mount(document.getElementById('company-edit'), h('div', { style: 'margin-top:12px' },
    h('h3', `修改 Edit: ${c.name}`),
    form([
      { name: 'name', label: '名称 Name', value: c.name, required: true },
      { name: 'contact_phone', label: '联系电话 Contact phone', value: c.contact_phone || '' },
    ], async (v) => {
      await act(() => api.patch(`/property-companies/${c.id}`, v), '已保存 Saved');
      rerender();
    }, { submit: '保存 Save', id: 'company-edit-form' })));
}

function newCompanyForm(powers) {
  return h('div', { style: 'margin-top:12px' }, h('h3', '新建物业公司 New property company'), form([
    { name: 'power_company_id', label: '供电公司 Power company', type: 'select', required: true,
      options: powers.map((p) => [p.id, p.name]) },
    { name: 'name', label: '名称 Name', required: true },
    { name: 'contact_phone', label: '联系电话 Contact phone' },
  ], async (v) => {
    await act(() => api.post('/property-companies', { ...v, power_company_id: Number(v.power_company_id) }),
      '已创建 Property company created');
    rerender();
  }, { submit: '创建 Create', id: 'property-company-form' }));
}

// ------------------------------------------------------------------ staff

function staffTable(staff, powerById, companyById) {
  return table(staff, [
    ['#', (u) => u.id],
    ['用户名 User name', (u) => u.username || '—'],
    ['姓名 Display name', (u) => u.display_name || '—'],
    ['角色 Role', (u) => badge(ROLE_LABELS[u.role] || u.role, u.role)],
    ['单位 Company', (u) => (u.property_company_id ? (companyById[u.property_company_id] || {}).name
      : (powerById[u.power_company_id] || {}).name) || '—'],
    ['电话 Phone', (u) => u.phone || '—'],
    ['状态 Active', (u) => (u.is_active ? badge('active', 'online') : badge('inactive', 'offline'))],
  ], { empty: '没有员工 No staff users.', rowAttrs: (u) => ({ dataset: { user: u.id } }) });
}

/** The company field that matters depends on the role; the API checks the combination. */
function newStaffForm(ctx, powers, companies) {
  const roles = ctx.can('platform_admin') ? Object.keys(ROLE_LABELS) : ['property_operator'];
  const f = form([
    { name: 'username', label: '用户名 User name', required: true, autocomplete: 'off' },
    { name: 'password', label: '初始密码 Initial password', type: 'password', required: true,
      autocomplete: 'new-password' },
    { name: 'role', label: '角色 Role', type: 'select', required: true, value: 'property_operator',
      options: roles.map((r) => [r, ROLE_LABELS[r]]) },
    { name: 'display_name', label: '姓名 Display name' },
    { name: 'phone', label: '手机 Mobile' },
    { name: 'power_company_id', label: '供电公司 Power company (power-company users)', type: 'select',
      options: powers.map((p) => [p.id, p.name]) },
    { name: 'property_company_id', label: '物业公司 Property company (operators)', type: 'select',
      options: companies.map((c) => [c.id, c.name]), value: ctx.me.property_company_id },
  ], async (v) => {
    const body = { ...v };
    if (v.role !== 'power_company') delete body.power_company_id;
    if (v.role !== 'property_operator') delete body.property_company_id;
    ['power_company_id', 'property_company_id'].forEach((k) => { if (body[k]) body[k] = Number(body[k]); });
    await act(() => api.post('/staff', body), `已创建 Created ${v.username}`);
    rerender();
  }, { submit: '创建员工 Create user', id: 'staff-form' });
  const role = f.elements.role;
  const sync = () => {
    f.elements.power_company_id.closest('label').hidden = role.value !== 'power_company';
    f.elements.property_company_id.closest('label').hidden = role.value !== 'property_operator';
  };
  role.addEventListener('change', sync);
  sync();
  return h('div', { style: 'margin-top:12px' }, h('h3', '新建员工 New staff user'), f);
}
