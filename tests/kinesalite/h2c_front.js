// A loopback front for the real KCL: its Kinesis client always speaks HTTP/2, over http:// that
// is h2c with prior knowledge, which kinesalite does not speak. Each request is forwarded to
// kinesalite over HTTP/1.1 and its answer returned. Usage: node h2c_front.js UPSTREAM_PORT
const http = require('http');
const http2 = require('http2');

const upstream = Number(process.argv[2]);
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  stream.on('end', () => {
    const body = Buffer.concat(chunks);
    const out = {};
    for (const [k, v] of Object.entries(headers)) {
      if (!k.startsWith(':')) out[k] = v;
    }
    out['content-length'] = body.length;
    const req = http.request(
      { host: '127.0.0.1', port: upstream, method: headers[':method'], path: headers[':path'], headers: out },
      (res) => {
        const back = {};
        for (const [k, v] of Object.entries(res.headers)) {
          if (!['connection', 'transfer-encoding', 'keep-alive'].includes(k)) back[k] = v;
        }
        back[':status'] = res.statusCode;
        stream.respond(back);
        res.pipe(stream);
      },
    );
    req.on('error', () => { try { stream.respond({ ':status': 502 }); stream.end(); } catch (e) {} });
    req.end(body);
  });
  stream.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port));
process.on('SIGTERM', () => process.exit(0));
