using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// A burst: N clients each open a transaction and wait inside DATA until all N are there, then
// every message ends at the same moment, far more than the scanner threads and the old fixed
// queue of 64 could take. With default admission every message waits for a scanner (within
// [scan] timeout) instead of being refused: N x 250, each delivered exactly once. 1,000 senders
// also need the default max_connections above 1,000 and the open file limit the daemon raises,
// and, with the default smtp_server_connections = 100, the connections of sessions inside DATA
// lent to the sessions still at MAIL: the mail server never sees more than 100 at once.
public sealed class BurstTests(ITestOutputHelper output)
{
    [Fact]
    public Task Two_hundred_simultaneous_senders_all_get_250_and_each_message_is_delivered_once() =>
        Burst(clients: 200, messageSize: 100 * 1024);

    [Fact]
    public Task A_thousand_simultaneous_senders_all_get_250_and_each_message_is_delivered_once() =>
        Burst(clients: 1000, messageSize: 2 * 1024);

    private async Task Burst(int clients, int messageSize)
    {
        await using var downstream = TestSmtpServer.Start();
        // The harness's defaults (2 scanner threads, scan timeout 30s); admission left as shipped.
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var everyoneInData = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inData = 0;

        async Task<Attempt> Send(int i)
        {
            var id = $"burst-{i}";
            var content = Bombs.WithAttachment(id, "report.bin", TestMessages.Noise(messageSize, seed: i));
            var step = "connect";
            var counted = false;
            void Arrive()
            {
                if (!counted && Interlocked.Increment(ref inData) == clients)
                {
                    everyoneInData.TrySetResult();
                }

                counted = true;
            }

            try
            {
                await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, TimeSpan.FromSeconds(60));
                foreach (var (command, positive) in new[]
                         {
                             ("EHLO client.test", 250), ($"MAIL FROM:<{TestMessages.Sender}>", 250),
                             ($"RCPT TO:<{TestMessages.Recipient}>", 250), ("DATA", 354),
                         })
                {
                    step = command.Split(' ')[0];
                    await client.SendAsync(command + "\r\n");
                    var reply = await client.ReadReplyOrCloseAsync();
                    if (reply?.Code != positive)
                    {
                        return new Attempt(id, step, reply, reply is null ? "closed" : null);
                    }
                }

                Arrive();
                await everyoneInData.Task;
                step = "end of data";
                await client.SendAsync(SmtpBytes.DataPayload(content));
                var final = await client.ReadReplyOrCloseAsync();
                return new Attempt(id, step, final, final is null ? "closed" : null);
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or TimeoutException)
            {
                return new Attempt(id, step, null, e.GetType().Name + ": " + e.Message.Split('\n')[0]);
            }
            finally
            {
                Arrive();  // a client that failed early must not keep the others waiting
            }
        }

        var attempts = await Task.WhenAll(Enumerable.Range(0, clients).Select(Send));

        output.WriteLine(Traffic.Summary(attempts));
        Assert.All(attempts, a => Assert.True(a.Accepted, a.ToString()));
        await downstream.Messages.WaitForCountAsync(clients, TimeSpan.FromSeconds(60), "the burst's messages");
        Assert.All(attempts, a => Assert.Equal(1, Traffic.CopiesOf(downstream, a.Id)));
        Assert.Equal(clients, downstream.Messages.Snapshot().Count);
        Assert.InRange(downstream.PeakConnections, 1, 100);
        await gateway.StopAsync();
    }
}
