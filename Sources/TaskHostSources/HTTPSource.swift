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
        logger.info("accepting tasks over HTTP", metadata: ["source": "\(name)", "listen": "\(listen)"])
        let router = intakeRouter(
            source: self, isStopped: { stopper.isStopped.load(ordering: .acquiring) || intake.failure != nil },
            admit: { lines in await intake.acceptAll(lines) })
        try await serve(router, on: listen, logger: logger, onRunning: { intake.serving() })
    }
}

/// The `http` source: POST one task (a JSON object) or a batch (NDJSON) to `/` or `/tasks`.
/// Answers 202 with the ids of the accepted tasks and the reasons of the rejected ones; 200 for a
/// single task whose id a task already holds (`{"id", "state", "duplicate": true}`); 400 only for
/// a body of which no line could be read; 401 for a missing or wrong bearer token, 413 over
/// `maxBodyBytes`; 429 with Retry-After while the scheduler's buffer is full (`queue: memory`),
/// 503 with Retry-After while the durable queue is full; 503 once the pipeline stops. A batch is
/// appended whole or not at all.
func intakeRouter(
    source: HTTPSource, isStopped: @escaping @Sendable () -> Bool,
    admit: @escaping @Sendable ([String]) async -> BatchOutcome
) -> Router<BasicRequestContext> {
    let router = Router()
    let handler: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
        func respond(_ status: HTTPResponse.Status, _ body: [UInt8], _ extra: HTTPFields = [:]) -> Response {
            var headers = extra
            headers[.contentType] = "application/json"
            return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        func answer(_ status: HTTPResponse.Status, _ message: String, _ extra: HTTPFields = [:]) -> Response {
            var body = JSONObjectWriter()
            body.add("error", message)
            return respond(status, body.finished, extra)
        }
        if let token = source.token {
            guard request.headers[.authorization] == "Bearer \(token)" else {
                return answer(.unauthorized, "missing or wrong bearer token", [.wwwAuthenticate: "Bearer"])
            }
        }
        if isStopped() { return answer(.serviceUnavailable, "the pipeline is stopping") }
        if let length = request.headers[.contentLength].flatMap(Int.init), length > source.maxBodyBytes {
            return answer(.contentTooLarge, "the body is \(length) bytes, over maxBodyBytes \(source.maxBodyBytes)")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: source.maxBodyBytes)
        } catch {
            return answer(.contentTooLarge, "the body is over maxBodyBytes \(source.maxBodyBytes)")
        }
        let text = String(buffer: body)
        let lines = text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map(String.init).filter {
            !$0.allSatisfy(\.isWhitespace)
        }
        guard !lines.isEmpty else { return answer(.badRequest, "the body holds no task") }
        let results: [Admitted]
        switch await admit(lines) {
        case .admitted(let admitted): results = admitted
        case .queueFull(let seconds):
            return answer(
                .serviceUnavailable, "the queue is full (queue.maxSizeMB or the disk); nothing was queued, retry later",
                [.retryAfter: "\(seconds)"])
        case .busy(let seconds):
            return answer(
                .tooManyRequests, "the scheduler's buffer is full; nothing was queued, retry later",
                [.retryAfter: "\(seconds)"])
        case .unavailable(let reason):
            return answer(.serviceUnavailable, "nothing was queued: \(reason)")
        }
        if results.count == 1, let id = results[0].id, let state = results[0].duplicateOf {
            var out = JSONObjectWriter()
            out.add("id", id)
            out.add("state", state)
            out.add("duplicate", raw: "true")
            return respond(.ok, out.finished)
        }
        var out = JSONObjectWriter()
        let accepted = results.compactMap { $0.error == nil && $0.duplicateOf == nil ? $0.id : nil }.map(quote)
        let rejected = results.enumerated().compactMap { index, result in
            result.error.map { "{\"line\":\(index + 1),\"error\":\(quote($0))}" }
        }
        let duplicates = results.enumerated().compactMap { index, result -> String? in
            guard let state = result.duplicateOf, let id = result.id else { return nil }
            return "{\"line\":\(index + 1),\"id\":\(quote(id)),\"state\":\(quote(state))}"
        }
        out.add("accepted", raw: "[" + accepted.joined(separator: ",") + "]")
        out.add("rejected", raw: "[" + rejected.joined(separator: ",") + "]")
        if !duplicates.isEmpty { out.add("duplicates", raw: "[" + duplicates.joined(separator: ",") + "]") }
        let status: HTTPResponse.Status = !accepted.isEmpty ? .accepted : duplicates.isEmpty ? .badRequest : .ok
        return respond(status, out.finished)
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
/// cannot listen (an address in use, not allowed). `onRunning` is called once it listens.
package func serve(
    _ router: Router<BasicRequestContext>, on address: String, logger: Logger,
    onRunning: @escaping @Sendable () -> Void = {}
) async throws(SourceError) {
    let (host, port) = hostAndPort(address)
    var quiet = logger
    quiet.logLevel = .warning
    let app = Application(
        router: router, configuration: .init(address: .hostname(host, port: port), serverName: "taskhost"),
        onServerRunning: { _ in onRunning() }, logger: quiet)
    do {
        try await app.run()
    } catch {
        throw SourceError(
            path: address,
            message: "cannot listen (\(error)): free the port, or give another address in the configuration")
    }
}
