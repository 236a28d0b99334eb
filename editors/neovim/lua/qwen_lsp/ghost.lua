-- Ghost text for Neovim before 0.12: requests textDocument/inlineCompletion while typing and
-- shows the untyped rest of the chosen item as extmark virtual text.
local compat = require('qwen_lsp.compat')
local partial = require('qwen_lsp.partial')

local M = {}
M.ns = vim.api.nvim_create_namespace('qwen_lsp_ghost')
local INVOKED, AUTOMATIC = 1, 2
local state = {} -- bufnr -> { client_id, items, index, tick, request, timer }

local function buf_state(bufnr)
  state[bufnr] = state[bufnr] or { items = {}, index = 1 }
  return state[bufnr]
end

--- The current item as { text, row, col } (start of its range, 0-based bytes), or nil.
local function current(bufnr)
  local s = state[bufnr]
  local item = s and s.items[s.index]
  if not item then
    return nil
  end
  local client = compat.get_client(s.client_id)
  local text = type(item.insertText) == 'table' and item.insertText.value or item.insertText
  if not item.range then
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    return { text = text, row = row - 1, col = col, command = item.command, client = client }
  end
  local row = item.range.start.line
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  local encoding = client and client.offset_encoding or 'utf-16'
  local end_row = item.range['end'].line
  local end_line = vim.api.nvim_buf_get_lines(bufnr, end_row, end_row + 1, false)[1] or ''
  return { text = text, row = row, col = compat.byte_col(line, item.range.start.character, encoding),
           end_row = end_row, end_col = compat.byte_col(end_line, item.range['end'].character, encoding),
           command = item.command, client = client }
end

--- The untyped rest of the current item, or nil when there is none.
function M.rest(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local cur = current(bufnr)
  local rest = cur and partial.untyped(cur.text, cur.row, cur.col)
  if rest == nil or rest == '' then
    return nil
  end
  return rest
end

function M.clear(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
end

--- Draw the rest of the current item after the cursor.
function M.render(bufnr)
  M.clear(bufnr)
  local rest = M.rest(bufnr)
  if not rest or vim.api.nvim_get_current_buf() ~= bufnr then
    return
  end
  local s = state[bufnr]
  local lines = vim.split(rest, '\n', { plain = true })
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local hint = #s.items > 1 and (' (%d/%d)'):format(s.index, #s.items) or ''
  local opts = { hl_mode = 'combine', virt_text_pos = vim.fn.has('nvim-0.10') == 1 and 'inline' or 'overlay' }
  if lines[1] ~= '' or hint ~= '' and #lines == 1 then
    opts.virt_text = { { lines[1], 'QwenLspGhost' } }
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], 'QwenLspGhost' } })
    end
  end
  if hint ~= '' then
    local target = #lines > 1 and opts.virt_lines[#opts.virt_lines] or opts.virt_text
    table.insert(target, { hint, 'QwenLspGhostHint' })
  end
  vim.api.nvim_buf_set_extmark(bufnr, M.ns, row - 1, col, opts)
end

local function cancel(s)
  if s.request then
    local client = compat.get_client(s.client_id)
    if client then
      compat.cancel(client, s.request)
    end
    s.request = nil
  end
end

--- Ask the server for items at the cursor; `kind` 1 = invoked, 2 = automatic.
function M.request(bufnr, kind)
  local s = buf_state(bufnr)
  local client = compat.get_client(s.client_id)
  if not client or vim.api.nvim_get_current_buf() ~= bufnr then
    return
  end
  cancel(s)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = kind }
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local ok, id = compat.request(client, 'textDocument/inlineCompletion', params, function(err, result)
    s.request = nil
    if err or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick or not vim.deep_equal(vim.api.nvim_win_get_cursor(0), cursor)
        or not vim.api.nvim_get_mode().mode:match('^i') then
      return
    end
    s.items = (result and (result.items or result)) or {}
    s.index = 1
    M.render(bufnr)
  end, bufnr)
  if ok then
    s.request = id
  end
end

--- Debounced automatic request after typing; keeps showing the current item while it still fits.
function M.on_typing(bufnr, delay)
  local s = buf_state(bufnr)
  M.render(bufnr)
  if s.timer then
    s.timer:stop()
    s.timer:close()
  end
  s.timer = vim.defer_fn(function()
    s.timer = nil
    if vim.api.nvim_get_mode().mode:match('^i') then
      M.request(bufnr, AUTOMATIC)
    end
  end, delay)
end

function M.dismiss(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local s = buf_state(bufnr)
  cancel(s)
  s.items, s.index = {}, 1
  M.clear(bufnr)
end

--- Start ghost text in `bufnr` for `client`.
function M.attach(bufnr, client, delay)
  buf_state(bufnr).client_id = client.id
  local group = vim.api.nvim_create_augroup('qwen_lsp_ghost_' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ 'TextChangedI', 'InsertEnter' }, {
    group = group, buffer = bufnr, callback = function() M.on_typing(bufnr, delay) end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group, buffer = bufnr, callback = function() M.dismiss(bufnr) end,
  })
end

function M.visible()
  return M.rest() ~= nil
end

--- Insert `split(rest)` of the current item (all of it by default); false when none is shown.
local function accept_with(split)
  local bufnr = vim.api.nvim_get_current_buf()
  local rest = M.rest(bufnr)
  if not rest then
    return false
  end
  local cur = current(bufnr)
  vim.schedule(function()
    local piece = split and split(rest) or rest
    if piece == rest and cur.end_row then
      partial.replace(cur.row, cur.col, cur.end_row, cur.end_col, cur.text)
    else
      partial.insert_at_cursor(piece)
    end
    if piece == rest then
      M.dismiss(bufnr)
      if cur.command and cur.client then
        compat.request(cur.client, 'workspace/executeCommand', cur.command, function() end, bufnr)
      end
    else
      M.render(bufnr)
    end
  end)
  return true
end

function M.accept() return accept_with(nil) end
function M.accept_word() return accept_with(partial.next_word) end
function M.accept_line() return accept_with(partial.next_line) end

--- Show the item `step` places further along (wrapping).
function M.cycle(step)
  local bufnr = vim.api.nvim_get_current_buf()
  local s = buf_state(bufnr)
  if #s.items > 1 then
    s.index = (s.index - 1 + step) % #s.items + 1
    M.render(bufnr)
  end
end

function M.trigger()
  M.request(vim.api.nvim_get_current_buf(), INVOKED)
end

function M.enable_for(bufnr, client, settings)
  M.attach(bufnr, client, settings.debounce or 75)
end

return M
