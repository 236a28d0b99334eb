;;; qwen-lsp-test.el --- Drives qwen-lsp.el with eglot in a real Emacs  -*- lexical-binding: t; -*-

;; Loaded after a generated settings file that sets `qwen-lsp-command', `qwen-lsp-settings',
;; `qwen-test-file', `qwen-test-typed', `qwen-test-steps', `qwen-test-events',
;; `qwen-test-timeout' and `qwen-test-client' (`eglot' or `lsp-mode').  Each step appends one JSON line to `qwen-test-events'; the pytest
;; side makes the assertions.  Steps: `accept-word', `dismiss', `trigger', `accept', `pause',
;; and `latency' (types `qwen-test-latency-line' key by key, timing each key to ghost text).

(let ((default-directory "/usr/share/emacs/site-lisp/elpa/"))
  (when (file-directory-p default-directory) (normal-top-level-add-subdirs-to-load-path)))
(require 'json)
(require 'python)
(require 'qwen-lsp)

(defvar qwen-test-file) (defvar qwen-test-typed) (defvar qwen-test-steps)
(defvar qwen-test-events) (defvar qwen-test-timeout)
(defvar qwen-test-client 'eglot "The LSP client that connects the buffer to the server.")
(defvar qwen-test-latency-line "")
(defvar qwen-test-key-timeout 30 "Seconds to wait for ghost text after one key in `latency'.")

(defun qwen-test-latency ()
  "Type `qwen-test-latency-line'; per key, the seconds until ghost text and whether it stayed."
  (dolist (ch (string-to-list qwen-test-latency-line))
    (let ((start (float-time)))
      (qwen-test-command 'self-insert-command ch)
      (let ((deadline (+ start qwen-test-key-timeout))
            (kept qwen-lsp--visible))
        (while (and (not qwen-lsp--visible) (< (float-time) deadline))
          (accept-process-output nil 0.005))
        (qwen-test-event "key" :char (string ch) :kept (if kept t :json-false)
                         :seconds (and qwen-lsp--visible (- (float-time) start)))))))

(defun qwen-test-event (name &rest plist)
  (with-temp-buffer
    (insert (json-encode (append (list :event name) plist)) "\n")
    (write-region (point-min) (point-max) qwen-test-events t 'silent)))

(defun qwen-test-wait (what pred timeout)
  (let ((deadline (+ (float-time) timeout)))
    (while (not (funcall pred))
      (when (> (float-time) deadline)
        (qwen-test-event "timeout" :what what :buffer (buffer-string))
        (kill-emacs 1))
      (accept-process-output nil 0.05)
      (redisplay))))

(defun qwen-test-command (command &optional event)
  "Run COMMAND as if its key were pressed."
  (setq this-command command last-command-event event)
  (run-hooks 'pre-command-hook)
  (if event (self-insert-command 1) (call-interactively command))
  (run-hooks 'post-command-hook)
  (setq last-command this-command)
  (redisplay t))

(defun qwen-test-key (key)
  (qwen-test-command (key-binding (kbd key))))

(defun qwen-test-state ()
  (list :buffer (buffer-substring-no-properties (point-min) (point-max)) :point (point)
        :ghost (qwen-lsp--rest) :visible qwen-lsp--visible))

(defun qwen-test-connect ()
  "Start the server for the current buffer through `qwen-test-client'."
  (pcase qwen-test-client
    ('eglot (require 'eglot)
            (qwen-lsp-eglot-setup '(python-mode))
            (apply #'eglot (eglot--guess-contact)))
    ('lsp-mode (setq lsp-enabled-clients '(qwen-lsp) lsp-auto-guess-root t lsp-keep-workspace-alive nil
                     lsp-session-file (concat qwen-test-events ".lsp-session") lsp-restart 'ignore
                     lsp-enable-file-watchers nil lsp-enable-symbol-highlighting nil lsp-lens-enable nil
                     lsp-headerline-breadcrumb-enable nil lsp-modeline-code-actions-enable nil
                     lsp-modeline-diagnostics-enable nil lsp-modeline-workspace-status-enable nil
                     lsp-completion-enable nil lsp-signature-auto-activate nil lsp-enable-snippet nil)
               (require 'lsp-mode)
               (lsp))))

(find-file qwen-test-file)
(goto-char (point-max))
(qwen-test-connect)
(qwen-test-wait "the model" (lambda () (member qwen-lsp-status '("ready" "error"))) qwen-test-timeout)
(qwen-test-event "status" :state qwen-lsp-status :message qwen-lsp-status-message)
(qwen-lsp-mode 1)
(dolist (ch (string-to-list qwen-test-typed))
  (qwen-test-command 'self-insert-command ch)
  (accept-process-output nil 0.03))
(dolist (step qwen-test-steps)
  (unless (memq step '(trigger latency))
    (qwen-test-wait "ghost text" (lambda () qwen-lsp--visible) qwen-test-timeout))
  (apply #'qwen-test-event "before" :step (symbol-name step) (qwen-test-state))
  (pcase step
    ('accept-word (qwen-test-key "M-f"))
    ('accept (qwen-test-key "TAB"))
    ('dismiss (qwen-test-key "C-g"))
    ('trigger (qwen-test-key "M-i"))
    ('latency (qwen-test-latency))
    ('pause (let ((shot (concat qwen-test-events ".shot")))
              (qwen-test-wait "the screenshot" (lambda () (file-exists-p shot)) 30))))
  (apply #'qwen-test-event "after" :step (symbol-name step) (qwen-test-state)))
(qwen-test-event "done")
(kill-emacs 0)
