// Fills `window.__switchyardPlayground` with methods over GraphiQL's state, so a
// browser test can select a tab, run it and read the response without poking at
// Monaco's DOM. Renders nothing.
import { useEffect, useRef } from 'react';
import { useGraphiQL, useGraphiQLActions } from '@graphiql/react';
import { expose, until } from './api.js';

const pickState = (s) => ({
  tabs: s.tabs,
  activeTabIndex: s.activeTabIndex,
  isFetching: s.isFetching,
  subscription: s.subscription,
  documentAST: s.documentAST,
  queryEditor: s.queryEditor,
  variableEditor: s.variableEditor,
  headerEditor: s.headerEditor,
  responseEditor: s.responseEditor,
});

/** True once the parsed document (operation facts) matches the query editor's text. */
function parsed(s, name) {
  const ast = s.documentAST;
  if (!s.queryEditor || !ast) return false;
  const body = ast.loc?.source?.body;
  if (typeof body === 'string') return body === s.queryEditor.getValue();
  return ast.definitions.some((d) => d.name?.value === name);
}

export function ScriptingApi() {
  const state = useGraphiQL(pickState);
  const actions = useGraphiQLActions();
  const ref = useRef(state);
  ref.current = state;

  useEffect(() => {
    const s = () => ref.current;
    const title = (tab) => tab.title;

    /** Makes the tab titled `name` (its operation name) active; resolves when it can run. */
    async function selectTab(name, timeoutMs = 5000) {
      const index = s().tabs.findIndex((t) => t.title === name || t.operationName === name);
      if (index < 0) throw new Error(`no tab named ${name}; tabs: ${s().tabs.map(title).join(', ')}`);
      if (s().activeTabIndex !== index) actions.changeTab(index);
      await until(() => s().activeTabIndex === index && parsed(s(), name), timeoutMs, `tab ${name} to be parsed`);
      return index;
    }

    /** Starts the active tab's operation (like the execute button), unless one is running. */
    function run() {
      if (s().isFetching || s().subscription) return false;
      void actions.run();
      return true;
    }

    /** Selects the tab, runs it and resolves to the response text (for a subscription: its first event). */
    async function runOperation(name, timeoutMs = 15000) {
      await selectTab(name);
      if (!run()) throw new Error('an operation is already running');
      return until(
        () => {
          const text = s().responseEditor?.getValue() ?? '';
          return !s().isFetching && text !== '' ? text : null;
        },
        timeoutMs,
        `the response of ${name}`,
      );
    }

    expose({
      /** True once the editors are mounted. */
      ready: () => Boolean(s().queryEditor && s().headerEditor && s().responseEditor),
      /** Tab titles (operation names), in order. */
      tabs: () => s().tabs.map(title),
      activeTab: () => s().tabs[s().activeTabIndex]?.title ?? null,
      selectTab,
      run,
      runOperation,
      stop: () => actions.stop(),
      isRunning: () => Boolean(s().isFetching || s().subscription),
      query: () => s().queryEditor?.getValue() ?? '',
      /** Replaces the active tab's operation (its tab title follows the new operation name). */
      setQuery: (text) => s().queryEditor?.setValue(text),
      variables: () => s().variableEditor?.getValue() ?? '',
      setVariables: (text) => s().variableEditor?.setValue(text),
      headers: () => s().headerEditor?.getValue() ?? '',
      setHeaders: (text) => s().headerEditor?.setValue(text),
      response: () => s().responseEditor?.getValue() ?? '',
    });
  }, [actions]);

  return null;
}
