// Vite build for the Switchyard playground.
//
// The built files in dist/ are committed and embedded by the Rust server, which
// serves them under /playground/. `base: './'` makes every asset URL relative, so
// the page works wherever it is mounted.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  base: './',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Monaco and GraphiQL are large; the playground is a dev tool, so one big
    // bundle is fine. Silence the size warning rather than split arbitrarily.
    chunkSizeWarningLimit: 8000,
    // No source maps: they would double the size of the committed output.
    sourcemap: false,
    // Emit assets (Monaco's codicon font) as files rather than data: URLs.
    assetsInlineLimit: 0,
    rolldownOptions: {
      onwarn(warning, warn) {
        // GraphiQL's React-compiler output starts modules with "use no memo",
        // which means nothing once bundled.
        if (warning.code === 'MODULE_LEVEL_DIRECTIVE') return;
        warn(warning);
      },
    },
  },
});
