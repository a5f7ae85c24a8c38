-- qwen-lsp for Neovim 0.11+: starts the server with vim.lsp.config/vim.lsp.enable, shows its
-- inline completions as ghost text, puts "Explain with Qwen" and "Fix with Qwen" in the right-click
-- menu and adds :QwenExplain, :QwenFix, :QwenStatus and :QwenInstall.
local M = {}

local NAME = 'qwen_lsp'

-- Every option with its default, each under a comment that says what it does.
M.defaults = {
  -- How to start the server: the `qwen-lsp` console script on PATH (else the one :QwenInstall put
  -- under stdpath('data')), or a list of your own.
  cmd = { 'qwen-lsp' },
  -- Or a Python with qwen-lsp installed (e.g. a virtualenv's): runs `python -I -m qwen_lsp serve`,
  -- isolated, so that a module in the project's folder cannot take the place of one of ours.
  python = nil,
  filetypes = { 'python' },
  root_markers = { 'pyproject.toml', 'setup.py', 'setup.cfg', '.git' },
  -- Server settings, each with its default (generated from the server's qwen_lsp/config.py by
  -- scripts/editor_settings.py). Sent as initializationOptions and on every change.
  settings = {
    -- Path of a GGUF model. Empty: the `QWEN_LSP_MODEL` environment variable, then the bundled
    -- model.
    model = '',
    -- Context window of the local model, in tokens.
    nCtx = 4096,
    -- Threads for the local model; 0 means one per core.
    nThreads = 0,
    -- Where the model runs. `local`: inside the server (llama.cpp), the fastest on one machine.
    -- `openai`: an OpenAI-compatible HTTP server (llama-server, vLLM, Ollama) at `endpoint`; its
    -- API key comes from the `QWEN_LSP_API_KEY` environment variable.
    backend = 'local',
    -- Base URL of the OpenAI-compatible server, ending in /v1 (backend `openai`). Empty:
    -- llama-server's default, http://127.0.0.1:8080/v1.
    endpoint = '',
    -- Model to ask the OpenAI-compatible server for (backend `openai`). Empty: the first one it
    -- lists.
    modelName = '',
    -- Show completions (ghost text) while typing.
    enableCompletion = true,
    -- Most tokens a completion may generate (about 30 ms each on 2 cores).
    completionMaxTokens = 48,
    -- Most time a completion may spend generating after its first token (milliseconds; 0: no
    -- limit). A block cut short keeps its complete lines.
    completionMaxMs = 1000,
    -- Prompt budget for the code around the cursor, in tokens (read at about 200 a second when
    -- cold).
    completionContextTokens = 1024,
    -- Most time a completion may spend reading what the cache does not hold of its prompt
    -- (milliseconds; 0: no limit). Beyond it the suggestion comes from a smaller window
    -- (completionColdContextTokens), and the full one is read in the background for the next.
    completionColdPromptMs = 1000,
    -- Prompt budget for the code around the cursor when the full prompt would take too long to
    -- read.
    completionColdContextTokens = 512,
    -- Memory for evaluated prompts kept for the places and files you return to (MB; about 12 per
    -- 1,000 tokens).
    promptCacheMb = 64,
    -- Most tokens of the rest of the workspace a completion reads ahead of the file: signatures of
    -- the names the file imports from other workspace files, then recently seen code of other open
    -- files (0: none). Read once per file, then kept in the model's cache.
    projectContextTokens = 256,
    -- Wait this long after a keystroke before using the model (milliseconds).
    debounceMs = 0,
    -- Language of explanations: a BCP-47 tag (`zh-cn`, `ja`, `de`) or a locale (`zh_CN.UTF-8`).
    -- Empty: the editor's display language (`initialize`'s `locale`), else English. Code and names
    -- stay as written.
    explainLanguage = '',
    -- Most tokens an explanation may generate.
    explainMaxTokens = 400,
    -- Most tokens a fix may generate.
    fixMaxTokens = 400,
  },
  ghost_text = {
    enabled = true,
    -- 'auto': Neovim's own vim.lsp.inline_completion where it exists (0.12+), else 'extmark',
    -- this plugin's small fallback for 0.11.
    engine = 'auto',
    -- Only for the fallback: wait this long after a keystroke before asking (Neovim's own
    -- implementation waits 200 ms).
    debounce_ms = 200,
  },
  keys = {
    -- Accepts the ghost text. While the completion popup is open the key is left to the popup,
    -- and without ghost text it does what it did before (e.g. a plain <Tab>).
    accept = '<Tab>',
    -- Other suggestions (native engine only); false to leave the keys alone.
    next = '<M-]>',
    prev = '<M-[>',
  },
  cursor_rest = {
    -- Tell the server where the cursor rests, so it reads the prompt there before you type.
    enabled = true,
    -- How long the cursor must stay put (milliseconds).
    delay_ms = 300,
  },
  explain = {
    -- Largest size of the explanation window, as a fraction of the editor.
    max_width = 0.6,
    max_height = 0.6,
  },
}

M.options = vim.deepcopy(M.defaults)

--- The command that starts the server for `options` (see M.defaults.cmd and M.defaults.python).
function M.server_cmd(options)
  if options.python then
    return { options.python, '-I', '-m', 'qwen_lsp', 'serve' }
  end
  local installed = require('qwen_lsp.install').server()
  if vim.deep_equal(options.cmd, M.defaults.cmd) and vim.fn.executable(options.cmd[1]) == 0 and installed then
    return { installed }
  end
  return options.cmd
end

-- The server reads snake_case or camelCase names; the defaults use camelCase (as VS Code does),
-- so a user's `completion_max_tokens` must not be overridden by the default `completionMaxTokens`.
local function camel_case(settings)
  local result = {}
  for key, value in pairs(settings or {}) do
    result[(key:gsub('_(%l)', string.upper))] = value
  end
  return result
end

--- The qwen-lsp client attached to `bufnr` (default: current buffer), if any.
---@return vim.lsp.Client?
function M.client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr or 0, name = NAME })[1]
end

function M.native_ghost_text()
  local engine = M.options.ghost_text.engine
  if engine == 'native' then
    return true
  end
  return engine == 'auto' and vim.lsp.inline_completion ~= nil
end

--- Accept the visible ghost text; false when there is none.
function M.accept()
  if M.native_ghost_text() then
    return vim.lsp.inline_completion.get()
  end
  return require('qwen_lsp.ghost').accept()
end

-- The key's mapping before ours, so that without ghost text it keeps doing what it did.
local function fallback_for(key, bufnr)
  local previous = vim.api.nvim_buf_call(bufnr, function()
    return vim.fn.maparg(key, 'i', false, true)
  end)
  if vim.tbl_isempty(previous) or previous.desc == 'qwen-lsp: accept' then
    return function()
      return key
    end
  end
  return function()
    if previous.callback then
      local result = previous.callback()
      return previous.expr == 1 and result or ''
    end
    local rhs = previous.expr == 1 and vim.api.nvim_eval(previous.rhs) or previous.rhs
    vim.api.nvim_feedkeys(vim.keycode(rhs), previous.noremap == 1 and 'n' or 'm', false)
    return ''
  end
end

local function map_keys(bufnr)
  local keys = M.options.keys
  if keys.accept then
    local fallback = fallback_for(keys.accept, bufnr)
    vim.keymap.set('i', keys.accept, function()
      -- The completion popup owns the key while it is open: no fight over <Tab>.
      if vim.fn.pumvisible() == 0 and M.accept() then
        return ''
      end
      return fallback()
    end, { buffer = bufnr, expr = true, desc = 'qwen-lsp: accept' })
  end
  if M.native_ghost_text() then
    for key, count in pairs({ [keys.next or ''] = 1, [keys.prev or ''] = -1 }) do
      if key ~= '' then
        vim.keymap.set('i', key, function()
          vim.lsp.inline_completion.select({ count = count })
        end, { buffer = bufnr, desc = 'qwen-lsp: other suggestion' })
      end
    end
  end
end

local function on_attach(client, bufnr)
  require('qwen_lsp.menu').attach()
  if M.options.cursor_rest.enabled then
    require('qwen_lsp.rest').attach(client, bufnr, M.options.cursor_rest.delay_ms)
  end
  if M.options.ghost_text.enabled and client:supports_method('textDocument/inlineCompletion') then
    if M.native_ghost_text() then
      vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    else
      require('qwen_lsp.ghost').attach(client, bufnr, M.options.ghost_text)
    end
    map_keys(bufnr)
  end
end

--- Send new settings to the running servers (and to the ones started later).
function M.configure(settings)
  M.options.settings = vim.tbl_deep_extend('force', M.options.settings, camel_case(settings))
  vim.lsp.config(NAME, { init_options = { qwen = M.options.settings }, settings = { qwen = M.options.settings } })
  for _, client in ipairs(vim.lsp.get_clients({ name = NAME })) do
    client.settings = { qwen = M.options.settings }
    client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  end
end

local function status()
  local client = M.client()
  if not client then
    vim.notify('qwen-lsp is not attached to this buffer', vim.log.levels.WARN)
    return
  end
  client:request('qwen/status', {}, function(err, result)
    if err then
      vim.notify('qwen-lsp: ' .. err.message, vim.log.levels.ERROR)
      return
    end
    local line = ('qwen-lsp: %s, %s'):format(result.state or '?', result.model or 'no model')
    local last = result.recent and result.recent[#result.recent]
    if last and last.generation_seconds and last.generation_seconds > 0 then
      line = line .. (', %.1f tokens/s'):format(last.generated_tokens / last.generation_seconds)
    end
    vim.notify(line)
  end)
end

local function create_commands()
  vim.api.nvim_create_user_command('QwenExplain', function(args)
    require('qwen_lsp.explain').explain(0, args.line1, args.line2)
  end, { range = true, desc = 'Explain the selected lines with Qwen, streaming into a float' })
  vim.api.nvim_create_user_command('QwenFix', function()
    require('qwen_lsp.menu').fix()
  end, { desc = 'Fix the diagnostic under the cursor with Qwen' })
  vim.api.nvim_create_user_command('QwenStatus', status, { desc = 'Show the model and its speed' })
  vim.api.nvim_create_user_command('QwenInstall', function()
    require('qwen_lsp.install').run(M.start)
  end, { desc = "Install the server into a virtual environment under stdpath('data')" })
end

function M.setup(opts)
  opts = vim.deepcopy(opts or {})
  opts.settings = camel_case(opts.settings)
  M.options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts)
  if vim.fn.has('nvim-0.11') == 0 then
    vim.notify('qwen-lsp needs Neovim 0.11 or newer', vim.log.levels.ERROR)
    return
  end
  local options = M.options
  vim.lsp.config(NAME, {
    filetypes = options.filetypes,
    root_markers = options.root_markers,
    init_options = { qwen = options.settings },
    settings = { qwen = options.settings },
    on_attach = on_attach,
  })
  vim.api.nvim_create_autocmd('LspDetach', {
    group = vim.api.nvim_create_augroup('qwen_lsp', { clear = true }),
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == NAME then
        require('qwen_lsp.menu').detach()
      end
    end,
  })
  M.start()
  create_commands()
end

--- (Re)start the server for the open buffers with the command M.server_cmd finds now (e.g. after
--- :QwenInstall).
function M.start()
  vim.lsp.config(NAME, { cmd = M.server_cmd(M.options) })
  vim.lsp.enable(NAME)
end

return M
