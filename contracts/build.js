#!/usr/bin/env node
// Compiles the registries in src/ with the pinned solc-js and writes each contract's ABI and
// bytecode to artifacts/<Contract>.json, the files the connector is built from.
// `node build.js --check` compiles and fails if the committed artifacts differ from the output.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const SOURCES = ['WorkerRegistry.sol', 'WorkOrderRegistry.sol', 'WorkOrderReceiptRegistry.sol', 'WorkerRegistryList.sol'];
const CONTRACTS = ['WorkerRegistry', 'WorkOrderRegistry', 'WorkOrderReceiptRegistry', 'DirectRegistry'];
const here = __dirname;
const check = process.argv.includes('--check');

const input = {
  language: 'Solidity',
  sources: Object.fromEntries(
    SOURCES.map((name) => [name, { content: fs.readFileSync(path.join(here, 'src', name), 'utf8') }]),
  ),
  settings: {
    // Shanghai: deploys on every current Ethereum client, Besu included, and on older dev chains.
    evmVersion: 'shanghai',
    optimizer: { enabled: true, runs: 200 },
    // No metadata hash: the bytecode then depends on the sources and settings only.
    metadata: { bytecodeHash: 'none' },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const problems = (output.errors || []).filter((e) => e.severity === 'error' || e.type === 'Warning');
for (const problem of problems) {
  process.stderr.write(problem.formattedMessage + '\n');
}
// Warnings fail the build too: the sources stay clean.
if (problems.length) {
  process.exit(1);
}

const artifacts = {};
for (const source of SOURCES) {
  for (const [name, contract] of Object.entries(output.contracts[source] || {})) {
    if (!CONTRACTS.includes(name)) continue;
    artifacts[name] = JSON.stringify(
      {
        contractName: name,
        source: `src/${source}`,
        compiler: `solc-js ${solc.version()}`,
        abi: contract.abi,
        bytecode: '0x' + contract.evm.bytecode.object,
      },
      null,
      2,
    ) + '\n';
  }
}

const dir = path.join(here, 'artifacts');
let stale = [];
for (const name of CONTRACTS) {
  if (!artifacts[name]) {
    process.stderr.write(`no contract ${name} in the output\n`);
    process.exit(1);
  }
  const file = path.join(dir, `${name}.json`);
  if (check) {
    const committed = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (committed !== artifacts[name]) stale.push(`artifacts/${name}.json`);
  } else {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(file, artifacts[name]);
  }
}
if (stale.length) {
  process.stderr.write(`stale: ${stale.join(', ')}; rebuild them with \`npm run build\` in contracts/\n`);
  process.exit(1);
}
process.stdout.write(check ? 'artifacts are current\n' : `wrote ${CONTRACTS.length} artifacts to artifacts/\n`);
