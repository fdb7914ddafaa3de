// Node: load Pyodide + numpy + our wheel from a built bundle and run pyodide_parity.py.
// usage: node pyodide_parity.js BUNDLE_DIR SCRIPT.py
const path = require('path');
const fs = require('fs');
async function main() {
  const [bundle, script] = process.argv.slice(2);
  const { loadPyodide } = require(path.resolve(bundle, 'pyodide', 'pyodide.js'));
  const py = await loadPyodide({ indexURL: path.resolve(bundle, 'pyodide') + '/', stdout: (s) => console.log(s), stderr: () => {} });
  await py.loadPackage('numpy', { messageCallback: () => {} });
  const wheels = JSON.parse(fs.readFileSync(path.resolve(bundle, 'wheels', 'index.json')));
  py.FS.writeFile('/tmp/timbreamt.whl', fs.readFileSync(path.resolve(bundle, 'wheels', wheels.timbreamt)));
  py.runPython("import zipfile, site; zipfile.ZipFile('/tmp/timbreamt.whl').extractall(site.getsitepackages()[0])");
  py.runPython(fs.readFileSync(script, 'utf8'));
}
main().catch((e) => { console.error(e); process.exit(1); });
