-- Registering the server: vim.lsp.config/enable on 0.11+, FileType autocommands before.
local compat = require('qwen_lsp.compat')

local M = {}
local NAME = 'qwen_lsp'

local function root_of(bufnr, markers)
  local path = vim.api.nvim_buf_get_name(bufnr)
  for _, marker in ipairs(markers) do
    local found = vim.fn.finddir(marker, vim.fn.fnamemodify(path, ':p:h') .. ';')
    if found == '' then
      found = vim.fn.findfile(marker, vim.fn.fnamemodify(path, ':p:h') .. ';')
    end
    if found ~= '' then
      return vim.fn.fnamemodify(found, ':p:h:h')
    end
  end
  return vim.fn.getcwd()
end

--- Start (or reuse) the client for `bufnr` on Neovim without vim.lsp.enable.
local function start(config, bufnr)
  if vim.lsp.start then
    return vim.lsp.start(vim.tbl_extend('force', config, { root_dir = root_of(bufnr, config.root_markers) }),
      { bufnr = bufnr })
  end
  local root = root_of(bufnr, config.root_markers)
  local id
  for _, client in pairs(vim.lsp.get_active_clients()) do
    if client.name == NAME and client.config.root_dir == root then
      id = client.id
    end
  end
  id = id or vim.lsp.start_client(vim.tbl_extend('force', config, { root_dir = root }))
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
  return id
end

--- Register the server described by `opts` (see qwen_lsp.setup) and call `on_attach`.
function M.register(opts, handlers, on_attach)
  local config = {
    name = NAME,
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = opts.settings,
    settings = { qwenLsp = opts.settings },
    handlers = handlers,
    on_attach = on_attach,
  }
  if vim.lsp.config and vim.lsp.enable then
    vim.lsp.config(NAME, config)
    vim.lsp.enable(NAME)
    return
  end
  vim.api.nvim_create_autocmd('FileType', {
    group = vim.api.nvim_create_augroup('qwen_lsp_register', { clear = true }),
    pattern = opts.filetypes,
    callback = function(args)
      if vim.bo[args.buf].buftype == '' then
        start(config, args.buf)
      end
    end,
  })
  -- Buffers already open when setup() runs.
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(opts.filetypes, vim.bo[bufnr].filetype)
        and #compat.clients(bufnr, NAME) == 0 then
      start(config, bufnr)
    end
  end
end

return M
