;;; qwen-lsp.el --- Local Qwen-Coder ghost-text completion through qwen-lsp  -*- lexical-binding: t; -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "27.1"))
;; Keywords: tools, languages, convenience

;;; Commentary:

;; Registers the qwen-lsp language server with lsp-mode (as an add-on server, so it runs
;; beside your Python/JS/... server) and with eglot, and provides `qwen-lsp-mode', a minor
;; mode that shows `textDocument/inlineCompletion' results as ghost text (an overlay).
;;
;; While ghost text is shown: TAB accepts it, M-f accepts a word, C-e accepts a line,
;; M-n / M-p cycle candidates, C-g dismisses.  M-i asks for a completion by hand.
;;
;; eglot runs one server per major mode: `qwen-lsp-eglot-setup' makes qwen-lsp *the* server
;; of the given modes (instead of, say, pylsp).  Use lsp-mode to run it beside another one.

;;; Code:

(require 'cl-lib)
(require 'jsonrpc)

(defgroup qwen-lsp nil
  "Local code completion with Qwen-Coder models."
  :group 'tools :prefix "qwen-lsp-")

(defcustom qwen-lsp-command '("qwen-lsp" "serve")
  "Command line that starts the server on stdio."
  :type '(repeat string))

(defcustom qwen-lsp-settings nil
  "Server settings as a plist, e.g. (:maxTokens 32 :model \"default\").
Sent as initializationOptions."
  :type 'plist)

(defcustom qwen-lsp-modes '(python-mode python-ts-mode js-mode js-ts-mode typescript-mode typescript-ts-mode
                            go-mode go-ts-mode rust-mode rust-ts-mode c-mode c++-mode c-ts-mode c++-ts-mode
                            java-mode sh-mode ruby-mode lua-mode)
  "Major modes that get the server."
  :type '(repeat symbol))

(defcustom qwen-lsp-delay 0.075
  "Seconds of quiet after typing before ghost text is requested."
  :type 'number)

(defcustom qwen-lsp-request-timeout 30
  "Seconds to wait for a completion (the first one on a slow CPU can take long)."
  :type 'number)

(defface qwen-lsp-ghost '((t :inherit shadow))
  "Face of the ghost text.")

(defvar qwen-lsp-status nil "Last `qwenLsp/status' state from the server, e.g. \"ready\".")
(defvar qwen-lsp-status-message nil "Message of the last `qwenLsp/status'.")

(defun qwen-lsp--on-status (params)
  "Remember PARAMS of a `qwenLsp/status' notification."
  (setq qwen-lsp-status (plist-get params :state)
        qwen-lsp-status-message (plist-get params :message))
  (force-mode-line-update t))

;;;; eglot

(defvar eglot-server-programs)
(declare-function eglot-current-server "eglot")
(declare-function eglot--TextDocumentPositionParams "eglot")
(declare-function eglot--lsp-position-to-point "eglot")
(declare-function eglot--signal-textDocument/didChange "eglot")

(defun qwen-lsp-eglot-contact (&optional _interactive)
  "The eglot contact: command and initializationOptions."
  (append qwen-lsp-command (and qwen-lsp-settings (list :initializationOptions qwen-lsp-settings))))

;;;###autoload
(defun qwen-lsp-eglot-setup (&optional modes)
  "Make qwen-lsp eglot's server for MODES (default `qwen-lsp-modes').
eglot runs one server per major mode: this replaces other servers
of those modes."
  (require 'eglot)
  (add-to-list 'eglot-server-programs (cons (or modes qwen-lsp-modes) #'qwen-lsp-eglot-contact)))

(with-eval-after-load 'eglot
  (cl-defmethod eglot-handle-notification (_server (_method (eql qwenLsp/status)) &rest params)
    (qwen-lsp--on-status params)))

;;;; lsp-mode

(declare-function lsp-register-client "lsp-mode")
(declare-function make-lsp-client "lsp-mode")
(declare-function lsp-stdio-connection "lsp-mode")
(declare-function lsp-request-async "lsp-mode")
(declare-function lsp--text-document-position-params "lsp-mode")
(declare-function lsp--line-character-to-point "lsp-mode")

(with-eval-after-load 'lsp-mode
  (lsp-register-client
   (make-lsp-client
    :new-connection (lsp-stdio-connection (lambda () qwen-lsp-command))
    :activation-fn (lambda (_file mode) (memq mode qwen-lsp-modes))
    :add-on? t
    :server-id 'qwen-lsp
    :initialization-options (lambda () qwen-lsp-settings)
    :notification-handlers
    (let ((handlers (make-hash-table :test #'equal)))
      (puthash "qwenLsp/status" (lambda (_workspace params) (qwen-lsp--on-status (qwen-lsp--plist params))) handlers)
      handlers))))

(defun qwen-lsp--plist (object)
  "OBJECT from lsp-mode as plists with keyword keys.
lsp-mode gives hash tables, unless it was built with plists."
  (cond ((hash-table-p object)
         (let (plist)
           (maphash (lambda (k v) (setq plist (plist-put plist (intern (concat ":" k)) (qwen-lsp--plist v)))) object)
           plist))
        ((vectorp object) (vconcat (mapcar #'qwen-lsp--plist object)))
        (t object)))

;;;; requests, through whichever client manages the buffer

(defun qwen-lsp--eglot-p ()
  (and (fboundp 'eglot-current-server) (eglot-current-server)))

(defun qwen-lsp--request (method params callback)
  "Send METHOD with PARAMS; call CALLBACK with the result (a plist)."
  (if (qwen-lsp--eglot-p)
      (progn
        (eglot--signal-textDocument/didChange)
        (jsonrpc-async-request (eglot-current-server) method params
                               :success-fn callback :error-fn #'ignore :timeout-fn #'ignore
                               :timeout qwen-lsp-request-timeout))
    (lsp-request-async (substring (symbol-name method) 1) params
                       (lambda (result) (funcall callback (qwen-lsp--plist result)))
                       :mode 'tick)))

(defun qwen-lsp--position-params ()
  (if (qwen-lsp--eglot-p)
      (eglot--TextDocumentPositionParams)
    (lsp--text-document-position-params)))

(defun qwen-lsp--point (position)
  "Buffer position of the LSP POSITION plist."
  (if (qwen-lsp--eglot-p)
      (eglot--lsp-position-to-point position)
    (lsp--line-character-to-point (plist-get position :line) (plist-get position :character))))

;;;; ghost text

(defvar-local qwen-lsp--items nil "Items of the last answer, as plists.")
(defvar-local qwen-lsp--index 0 "Index of the shown item.")
(defvar-local qwen-lsp--overlay nil "The ghost-text overlay.")
(defvar-local qwen-lsp--visible nil "Non-nil while ghost text is shown (enables `qwen-lsp-ghost-map').")
(defvar-local qwen-lsp--timer nil)

(defvar qwen-lsp-ghost-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "TAB") #'qwen-lsp-accept)
    (define-key map (kbd "<tab>") #'qwen-lsp-accept)
    (define-key map (kbd "M-f") #'qwen-lsp-accept-word)
    (define-key map (kbd "C-e") #'qwen-lsp-accept-line)
    (define-key map (kbd "M-n") #'qwen-lsp-next)
    (define-key map (kbd "M-p") #'qwen-lsp-previous)
    (define-key map (kbd "C-g") #'qwen-lsp-dismiss)
    map)
  "Keys active while ghost text is shown.")

(defvar qwen-lsp-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "M-i") #'qwen-lsp-complete)
    map)
  "Keys of `qwen-lsp-mode'.")

(defvar qwen-lsp--emulation-alist `((qwen-lsp--visible . ,qwen-lsp-ghost-map))
  "Puts `qwen-lsp-ghost-map' above other keymaps while ghost text is shown.")
(add-to-list 'emulation-mode-map-alists 'qwen-lsp--emulation-alist)

(defun qwen-lsp--item-start (item)
  (let ((range (plist-get item :range)))
    (if range (qwen-lsp--point (plist-get range :start)) (point))))

(defun qwen-lsp--item-end (item)
  (let ((range (plist-get item :range)))
    (if range (qwen-lsp--point (plist-get range :end)) (point))))

(defun qwen-lsp--item-text (item)
  (let ((text (plist-get item :insertText)))
    (if (stringp text) text (plist-get text :value))))

(defun qwen-lsp--rest ()
  "The untyped rest of the shown item, or nil."
  (let* ((item (nth qwen-lsp--index qwen-lsp--items))
         (start (and item (qwen-lsp--item-start item)))
         (text (and item (qwen-lsp--item-text item))))
    (when (and start (<= start (point)))
      (let ((typed (buffer-substring-no-properties start (point))))
        (when (and (string-prefix-p typed text) (> (length text) (length typed)))
          (substring text (length typed)))))))

(defun qwen-lsp--render ()
  "Show the rest of the current item at point, or hide the ghost text."
  (when qwen-lsp--overlay (delete-overlay qwen-lsp--overlay))
  (let ((rest (qwen-lsp--rest)))
    (setq qwen-lsp--visible (and rest t))
    (when rest
      (let ((shown (propertize rest 'face 'qwen-lsp-ghost)))
        (put-text-property 0 1 'cursor t shown)
        (when (> (length qwen-lsp--items) 1)
          (setq shown (concat shown (propertize (format " (%d/%d)" (1+ qwen-lsp--index) (length qwen-lsp--items))
                                                'face 'shadow))))
        (setq qwen-lsp--overlay (make-overlay (point) (point) nil t nil))
        (overlay-put qwen-lsp--overlay 'after-string shown)
        (overlay-put qwen-lsp--overlay 'qwen-lsp t)))))

(defun qwen-lsp-complete (&optional automatic)
  "Ask for ghost text at point (AUTOMATIC when from typing)."
  (interactive)
  (let ((buffer (current-buffer))
        (tick (buffer-chars-modified-tick))
        (pos (point))
        (params (append (qwen-lsp--position-params)
                        (list :context (list :triggerKind (if automatic 2 1))))))
    (qwen-lsp--request
     :textDocument/inlineCompletion params
     (lambda (result)
       (when (buffer-live-p buffer)
         (with-current-buffer buffer
           (when (and (= tick (buffer-chars-modified-tick)) (= pos (point)))
             (let ((items (if (vectorp result) result (plist-get result :items))))
               (setq qwen-lsp--items (mapcar #'qwen-lsp--plist (append items nil))
                     qwen-lsp--index 0)
               (qwen-lsp--render)))))))))

(defun qwen-lsp--after-change (&rest _)
  "Keep showing the item while it still fits, and ask again after `qwen-lsp-delay'."
  (when qwen-lsp--timer (cancel-timer qwen-lsp--timer))
  (let ((buffer (current-buffer)))
    (setq qwen-lsp--timer
          (run-with-timer qwen-lsp-delay nil
                          (lambda ()
                            (when (buffer-live-p buffer)
                              (with-current-buffer buffer
                                (when (eq (window-buffer (selected-window)) buffer)
                                  (qwen-lsp-complete t)))))))))

(defun qwen-lsp--post-command ()
  (unless (memq this-command '(qwen-lsp-accept qwen-lsp-accept-word qwen-lsp-accept-line qwen-lsp-next
                                                qwen-lsp-previous qwen-lsp-complete))
    (qwen-lsp--render)))

(defun qwen-lsp-dismiss ()
  "Hide the ghost text."
  (interactive)
  (setq qwen-lsp--items nil qwen-lsp--index 0)
  (qwen-lsp--render))

(defun qwen-lsp--accept-piece (split)
  "Insert (SPLIT rest) of the ghost text.
With SPLIT nil, apply the whole item: its range and its command."
  (let ((rest (qwen-lsp--rest))
        (item (nth qwen-lsp--index qwen-lsp--items)))
    (when rest
      (if split
          (insert (funcall split rest))
        (let ((start (qwen-lsp--item-start item))
              (end (max (point) (qwen-lsp--item-end item))))
          (delete-region start end)
          (goto-char start)
          (insert (qwen-lsp--item-text item))
          (let ((command (plist-get item :command)))
            (when command
              (qwen-lsp--request :workspace/executeCommand
                                 (list :command (plist-get command :command)
                                       :arguments (plist-get command :arguments))
                                 #'ignore)))
          (setq qwen-lsp--items nil)))
      (qwen-lsp--render))))

(defun qwen-lsp--next-word (rest)
  (if (string-match "\\`[ \t\n]*\\(?:[[:alnum:]_]+\\|[^[:alnum:]_ \t\n]+\\)" rest)
      (match-string 0 rest)
    rest))

(defun qwen-lsp--next-line (rest)
  (if (string-match "\\`\n?[^\n]*" rest) (match-string 0 rest) rest))

(defun qwen-lsp-accept ()
  "Insert the ghost text."
  (interactive)
  (qwen-lsp--accept-piece nil))

(defun qwen-lsp-accept-word ()
  "Insert the next word of the ghost text."
  (interactive)
  (qwen-lsp--accept-piece #'qwen-lsp--next-word))

(defun qwen-lsp-accept-line ()
  "Insert the ghost text up to the end of its line."
  (interactive)
  (qwen-lsp--accept-piece #'qwen-lsp--next-line))

(defun qwen-lsp-next (&optional step)
  "Show the next candidate (STEP further)."
  (interactive)
  (when qwen-lsp--items
    (setq qwen-lsp--index (mod (+ qwen-lsp--index (or step 1)) (length qwen-lsp--items)))
    (qwen-lsp--render)))

(defun qwen-lsp-previous ()
  "Show the previous candidate."
  (interactive)
  (qwen-lsp-next -1))

;;;###autoload
(define-minor-mode qwen-lsp-mode
  "Ghost-text completions from qwen-lsp (needs eglot or lsp-mode connected to it)."
  :lighter (:eval (format " Qwen[%s]" (or qwen-lsp-status "-")))
  :keymap qwen-lsp-mode-map
  (if qwen-lsp-mode
      (progn
        (add-hook 'after-change-functions #'qwen-lsp--after-change nil t)
        (add-hook 'post-command-hook #'qwen-lsp--post-command nil t))
    (remove-hook 'after-change-functions #'qwen-lsp--after-change t)
    (remove-hook 'post-command-hook #'qwen-lsp--post-command t)
    (qwen-lsp-dismiss)))

(provide 'qwen-lsp)
;;; qwen-lsp.el ends here
