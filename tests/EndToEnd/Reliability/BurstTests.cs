using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// A burst: 200 clients each open a transaction and wait inside DATA until all 200 are there, then
// every message ends at the same moment, far more than the scanner threads and the old fixed
// queue of 64 could take. With default admission every message waits for a scanner (within
// [scan] timeout) instead of being refused: 200 x 250, each delivered exactly once.
public sealed class BurstTests(ITestOutputHelper output)
{
    private const int Clients = 200;

    [Fact]
    public async Task Two_hundred_simultaneous_senders_all_get_250_and_each_message_is_delivered_once()
    {
        await using var downstream = TestSmtpServer.Start();
        // The harness's defaults (2 scanner threads, scan timeout 30s); admission left as shipped.
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var everyoneInData = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inData = 0;

        async Task<Attempt> Send(int i)
        {
            var id = $"burst-{i}";
            var content = Bombs.WithAttachment(id, "report.bin", TestMessages.Noise(100 * 1024, seed: i));
            var step = "connect";
            var counted = false;
            void Arrive()
            {
                if (!counted && Interlocked.Increment(ref inData) == Clients)
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

        var attempts = await Task.WhenAll(Enumerable.Range(0, Clients).Select(Send));

        output.WriteLine(Traffic.Summary(attempts));
        Assert.All(attempts, a => Assert.True(a.Accepted, a.ToString()));
        await downstream.Messages.WaitForCountAsync(Clients, TimeSpan.FromSeconds(60), "the burst's messages");
        Assert.All(attempts, a => Assert.Equal(1, Traffic.CopiesOf(downstream, a.Id)));
        Assert.Equal(Clients, downstream.Messages.Snapshot().Count);
        await gateway.StopAsync();
    }
}
