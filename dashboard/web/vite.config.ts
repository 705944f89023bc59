import { defineConfig } from "vite";

// Built into ../dist, which the `dashboard` crate embeds in the binary. Fixed file
// names (no content hashes) keep the committed build diffable; the server sends
// `Cache-Control: no-cache` with an ETag instead.
export default defineConfig({
  base: "/",
  build: {
    outDir: "../dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    rollupOptions: {
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/[name][extname]",
      },
    },
  },
});
