-- :QwenInstall: the server in a private virtual environment under stdpath('data'). From a
-- checkout of qwen-lsp (this plugin's own folder), with the project's scripts/install.sh; else
-- `qwen-lsp[model]` from PyPI with pip. :checkhealth prints the same command.
local M = {}

--- The private virtual environment.
function M.venv()
  return vim.fs.joinpath(vim.fn.stdpath('data'), 'qwen-lsp', 'venv')
end

--- Its server, when installed.
---@return string?
function M.server()
  local server = vim.fs.joinpath(M.venv(), 'bin', 'qwen-lsp')
  return vim.fn.executable(server) == 1 and server or nil
end

-- The qwen-lsp checkout this plugin comes from (…/editors/neovim/lua/qwen_lsp/install.lua), if any.
local function checkout()
  local here = debug.getinfo(1, 'S').source:sub(2)
  local root = vim.fn.fnamemodify(here, ':p:h:h:h:h:h')
  if vim.fn.filereadable(vim.fs.joinpath(root, 'scripts', 'install.sh')) == 1 then
    return root
  end
end

--- The shell command that installs the server into M.venv().
function M.command()
  local venv = vim.fn.shellescape(M.venv())
  local root = checkout()
  if root then
    return ('QWEN_LSP_VENV=%s %s'):format(venv, vim.fn.shellescape(vim.fs.joinpath(root, 'scripts', 'install.sh')))
  end
  return ("python3 -m venv %s && %s/bin/python -m pip install 'qwen-lsp[model]'"):format(venv, venv)
end

--- Run the install in a terminal split; `on_done` runs when it succeeded.
function M.run(on_done)
  local command = M.command()
  vim.cmd('botright 15new')
  vim.b.qwen_install = true
  vim.fn.jobstart({ vim.o.shell, vim.o.shellcmdflag, command }, {
    term = true,
    on_exit = function(_, code)
      if code == 0 then
        vim.notify('qwen-lsp installed in ' .. M.venv() .. '; starting it')
        on_done()
      else
        vim.notify(('qwen-lsp install failed (exit %d): see the terminal'):format(code), vim.log.levels.ERROR)
      end
    end,
  })
end

return M
