// Lint the extension, its unit tests and the code-server driver.
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["out/", "node_modules/", ".code-server/"] },
  ...tseslint.configs.recommended,
);
