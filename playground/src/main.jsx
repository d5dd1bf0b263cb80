// Entry point of the Switchyard playground (served at /playground/).
//
// Everything is bundled: Monaco's workers come from graphiql/setup-workers/vite,
// fonts are data: URLs in GraphiQL's CSS, so the page makes no request to any
// other host.
import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import './style.css';
import { createRoot } from 'react-dom/client';
import { Playground } from './Playground.jsx';
import { createFetcher } from './fetcher.js';
import { loadOperations } from './operations.js';
import { createPlaygroundStorage, fingerprint } from './storage.js';

async function start() {
  const { tabs } = await loadOperations();
  const storage = createPlaygroundStorage(fingerprint(JSON.stringify(tabs)));
  const root = document.getElementById('graphiql');
  root.textContent = '';
  createRoot(root).render(
    <Playground
      fetcher={createFetcher()}
      storage={storage}
      defaultTabs={tabs}
      headerTools={document.getElementById('switchyard-header-tools')}
    />,
  );
}

start().catch((error) => {
  console.error('Switchyard playground failed to start', error);
  const root = document.getElementById('graphiql');
  root.textContent = `The playground failed to start: ${error.message}`;
});
