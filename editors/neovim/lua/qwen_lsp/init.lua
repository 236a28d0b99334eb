-- qwen-lsp for Neovim: registers the server and maps the ghost-text keys.
local M = {}

M.defaults = {
  cmd = { 'qwen-lsp', 'serve' },
  filetypes = { 'python', 'lua', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
                'c', 'cpp', 'java', 'sh', 'ruby', 'php', 'cs', 'kotlin', 'swift', 'scala', 'html', 'css' },
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'Cargo.toml', 'go.mod' },
  settings = {}, -- sent as initializationOptions and workspace/configuration (section qwenLsp)
  debounce = 75, -- ms of quiet before a request (Neovim before 0.12; the built-in client uses 200)
  keys = {
    accept = '<Tab>',
    accept_word = '<M-Right>',
    accept_line = '<M-Down>',
    next = '<M-]>',
    prev = '<M-[>',
    trigger = '<M-\\>',
    dismiss = '<C-]>',
  },
}

--- The ghost-text backend: the built-in client on 0.12+, our extmarks before.
function M.backend()
  if vim.lsp.inline_completion then
    return require('qwen_lsp.native')
  end
  return require('qwen_lsp.ghost')
end

local function map_keys(keys)
  local backend = M.backend()
  local function with_fallback(action, key)
    return function()
      if action() then
        return ''
      end
      return vim.api.nvim_replace_termcodes(key, true, false, true)
    end
  end
  local maps = {
    accept = with_fallback(backend.accept, keys.accept or ''),
    accept_word = with_fallback(backend.accept_word, keys.accept_word or ''),
    accept_line = with_fallback(backend.accept_line, keys.accept_line or ''),
  }
  for name, fn in pairs(maps) do
    if keys[name] then
      vim.keymap.set('i', keys[name], fn, { expr = true, replace_keycodes = false, desc = 'qwen-lsp ' .. name })
    end
  end
  local plain = {
    next = function() backend.cycle(1) end,
    prev = function() backend.cycle(-1) end,
    trigger = backend.trigger,
    dismiss = backend.dismiss,
  }
  for name, fn in pairs(plain) do
    if keys[name] then
      vim.keymap.set('i', keys[name], fn, { desc = 'qwen-lsp ' .. name })
    end
  end
end

local function commands()
  vim.api.nvim_create_user_command('QwenLspStatus', function()
    local status = require('qwen_lsp.status')
    print(('qwen-lsp: %s %s'):format(status.state, status.message))
  end, {})
  vim.api.nvim_create_user_command('QwenLspPrompt', function()
    local compat = require('qwen_lsp.compat')
    local client = compat.clients(0, 'qwen_lsp')[1]
    local reply = client and compat.request_sync(client, 'qwenLsp/lastPrompt', {}, 5000, 0)
    local prompt = reply and reply.result and reply.result.prompt or ''
    vim.cmd('new')
    vim.api.nvim_buf_set_lines(0, 0, -1, false, vim.split(prompt ~= '' and prompt or '(no prompt yet)', '\n'))
    vim.bo.buftype, vim.bo.modified = 'nofile', false
  end, {})
  vim.api.nvim_create_user_command('QwenLspLog', function()
    vim.cmd('tabnew ' .. vim.fn.fnameescape(vim.lsp.get_log_path()))
  end, {})
end

--- Register the server and the keys. `opts` overrides M.defaults (keys = false maps none).
function M.setup(opts)
  opts = vim.tbl_deep_extend('force', M.defaults, opts or {})
  vim.api.nvim_set_hl(0, 'QwenLspGhost', { link = 'Comment', default = true })
  vim.api.nvim_set_hl(0, 'QwenLspGhostHint', { link = 'NonText', default = true })
  local status = require('qwen_lsp.status')
  local backend = M.backend()
  require('qwen_lsp.register').register(opts, { ['qwenLsp/status'] = status.handler }, function(client, bufnr)
    backend.enable_for(bufnr, client, opts)
  end)
  if opts.keys then
    map_keys(opts.keys)
  end
  commands()
  M.options = opts
end

return M
