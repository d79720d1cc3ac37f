import HTTPTypes
import Hummingbird
import Logging
import TaskHostJSON

/// The `http` source: POSTed JSON Lines, each answered with its task's id. The only source that
/// runs an HTTP server. Served until the run's graceful shutdown reaches the source: the server
/// then stops accepting and finishes the requests it has.
struct HTTPSource: TaskSource {
    let name: String
    let listen: String
    let token: String?
    let maxBodyBytes: Int

    func run(into intake: some SourceIntake, stopper: StopSignal, logger: Logger) async throws(SourceError) {
        _ = await intake.start(file: nil)
        let admitLines: @Sendable ([SourceLine]) async -> [Admitted] = { lines in
            var results: [Admitted] = []
            for line in lines { results.append(await intake.accept(line, batch: nil, checkpoint: nil)) }
            // On the durable queue, the answer (202) waits for the commit.
            if !(await intake.flush()) {
                let message = intake.failure ?? "the queue failed"
                return results.map { Admitted(id: $0.id, error: $0.error ?? "not queued: \(message)") }
            }
            return results
        }
        logger.info("accepting tasks over HTTP", metadata: ["source": "\(name)", "listen": "\(listen)"])
        let router = intakeRouter(
            source: self, isFull: { intake.isFull },
            isStopped: { stopper.isStopped.load(ordering: .acquiring) || intake.failure != nil }, admit: admitLines)
        try await serve(router, on: listen, logger: logger)
    }
}

/// The `http` source: POST one task (a JSON object) or a batch (NDJSON) to `/` or `/tasks`.
/// Answers 202 with the ids of the accepted tasks and the reasons of the rejected ones; 401 for
/// a missing or wrong bearer token, 413 over `maxBodyBytes`, 429 with Retry-After while the
/// scheduler's buffer is full, 503 once the pipeline stops.
func intakeRouter(
    source: HTTPSource, isFull: @escaping @Sendable () -> Bool, isStopped: @escaping @Sendable () -> Bool,
    admit: @escaping @Sendable ([SourceLine]) async -> [Admitted]
) -> Router<BasicRequestContext> {
    let router = Router()
    let handler: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
        func answer(_ status: HTTPResponse.Status, _ message: String, _ extra: HTTPFields = [:]) -> Response {
            var body = JSONObjectWriter()
            body.add("error", message)
            var headers = extra
            headers[.contentType] = "application/json"
            return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.finished)))
        }
        if let token = source.token {
            guard request.headers[.authorization] == "Bearer \(token)" else {
                return answer(.unauthorized, "missing or wrong bearer token", [.wwwAuthenticate: "Bearer"])
            }
        }
        if isStopped() { return answer(.serviceUnavailable, "the pipeline is stopping") }
        if isFull() {
            return answer(.tooManyRequests, "the scheduler's buffer is full; retry later", [.retryAfter: "1"])
        }
        if let length = request.headers[.contentLength].flatMap(Int.init), length > source.maxBodyBytes {
            return answer(.contentTooLarge, "the body is \(length) bytes, over maxBodyBytes \(source.maxBodyBytes)")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: source.maxBodyBytes)
        } catch {
            return answer(.contentTooLarge, "the body is over maxBodyBytes \(source.maxBodyBytes)")
        }
        let lines = bodyLines(body.readableBytesView)
        guard !lines.isEmpty else { return answer(.badRequest, "the body holds no task") }
        let results = await admit(lines)
        var out = JSONObjectWriter()
        let accepted = results.compactMap { $0.error == nil ? $0.id : nil }.map(quote)
        let rejected = results.enumerated().compactMap { index, result in
            result.error.map { "{\"line\":\(index + 1),\"error\":\(quote($0))}" }
        }
        out.add("accepted", raw: "[" + accepted.joined(separator: ",") + "]")
        out.add("rejected", raw: "[" + rejected.joined(separator: ",") + "]")
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(
            status: accepted.isEmpty ? .badRequest : .accepted, headers: headers,
            body: .init(byteBuffer: ByteBuffer(bytes: out.finished)))
    }
    router.post("/", use: handler)
    router.post("/tasks", use: handler)
    return router
}

/// Splits `host:port`.
package func hostAndPort(_ address: String) -> (String, Int) {
    let colon = address.lastIndex(of: ":")!
    return (String(address[..<colon]), Int(address[address.index(after: colon)...])!)
}

/// Runs a Hummingbird application until the run's graceful shutdown reaches it; throws when it
/// cannot listen (an address in use, not allowed).
package func serve(_ router: Router<BasicRequestContext>, on address: String, logger: Logger) async throws(SourceError)
{
    let (host, port) = hostAndPort(address)
    var quiet = logger
    quiet.logLevel = .warning
    let app = Application(
        router: router, configuration: .init(address: .hostname(host, port: port), serverName: "taskhost"),
        logger: quiet)
    do {
        try await app.run()
    } catch {
        throw SourceError(
            path: address,
            message: "cannot listen (\(error)): free the port, or give another address in the configuration")
    }
}
