// Compiles TestToken.sol with the npm solc package into TestToken.json (ABI + bytecode).
// The JSON is committed; tests/test_chain_artifacts checks it matches a fresh compile.
import { readFileSync, writeFileSync } from "node:fs";
import solc from "solc";

const source = readFileSync(new URL("./TestToken.sol", import.meta.url), "utf8");
const input = {
  language: "Solidity",
  sources: { "TestToken.sol": { content: source } },
  settings: { optimizer: { enabled: true, runs: 200 },
              outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const contract = output.contracts["TestToken.sol"].TestToken;
const artifact = { compiler: solc.version(), abi: contract.abi, bytecode: "0x" + contract.evm.bytecode.object };
const target = process.argv[2] || new URL("./TestToken.json", import.meta.url);
writeFileSync(target, JSON.stringify(artifact, null, 2) + "\n");
