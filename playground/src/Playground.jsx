import { useEffect, useRef } from 'react';
import { GraphiQL } from 'graphiql';
import { useGraphiQL } from '@graphiql/react';
import { SignIn } from './SignIn.jsx';
import { ScriptingApi } from './ScriptingApi.jsx';

/**
 * GraphiQL 5.4 fills the variables editor on load from `initialVariables` (or its
 * storage) only, not from the active tab, so the first example's variables would
 * stay hidden until one switches tabs. Copy them in once the editor is mounted.
 */
function ActiveTabVariables() {
  const variableEditor = useGraphiQL((s) => s.variableEditor);
  const tab = useGraphiQL((s) => s.tabs[s.activeTabIndex]);
  const done = useRef(false);
  useEffect(() => {
    if (done.current || !variableEditor) return;
    done.current = true;
    const variables = tab?.variables;
    if (variables && variableEditor.getValue() !== variables) variableEditor.setValue(variables);
  }, [variableEditor, tab]);
  return null;
}

/**
 * GraphiQL with the example operations as tabs, the headers editor open, and the
 * demo sign-in controls rendered into `headerTools` (an element of the page header).
 */
export function Playground({ fetcher, storage, defaultTabs, headerTools }) {
  return (
    <GraphiQL
      fetcher={fetcher}
      storage={storage}
      defaultTabs={defaultTabs}
      defaultEditorToolsVisibility="headers"
      shouldPersistHeaders={false}
    >
      {/* The page header carries the title; no logo (the stock one links to GitHub). */}
      <GraphiQL.Logo>{null}</GraphiQL.Logo>
      <ActiveTabVariables />
      <SignIn container={headerTools} />
      <ScriptingApi />
    </GraphiQL>
  );
}
