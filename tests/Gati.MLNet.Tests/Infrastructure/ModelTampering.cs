using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>Damaged model zips that pass every check but the one under test.</summary>
public static class ModelTampering
{
    /// <summary>
    /// A copy of a model zip in which one cache's ONNX graph has its LogSoftmax node's operator renamed to one that does not
    /// exist. Zip and checksums stay valid (the entry is renamed to its new SHA-256 key and every reference in the model
    /// streams follows) and Gati's own readers accept it: only ONNX Runtime refuses it, when it creates the session
    /// ("[ErrorCode:InvalidGraph] ... No Op registered for LogSoftmxx").
    /// </summary>
    public static void CorruptOnnxGraph(string source, string destination)
    {
        File.Copy(source, destination, overwrite: true);
        using var zip = ZipFile.Open(destination, ZipArchiveMode.Update);
        // A NodeProto's op_type: field 4, length-delimited (tag 0x22), 10 bytes: "LogSoftmax" (a cache's predictor output).
        byte[] opType = [0x22, 0x0A, .. Encoding.ASCII.GetBytes("LogSoftmax")];
        ZipArchiveEntry? graph = null;
        byte[] bytes = [];
        var at = -1;
        foreach (var entry in zip.Entries.Where(e => e.FullName.StartsWith("GatiShared/", StringComparison.Ordinal) && e.FullName.EndsWith(".onnx", StringComparison.Ordinal)))
        {
            using var stream = entry.Open();
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            bytes = buffer.ToArray();
            at = bytes.AsSpan().IndexOf(opType);
            if (at < 0) continue;
            graph = entry;
            break;
        }
        Assert.True(graph is not null, "the model has no cache graph with a LogSoftmax node to corrupt");
        Encoding.ASCII.GetBytes("LogSoftmxx").CopyTo(bytes, at + 2);
        var oldKey = Path.GetFileNameWithoutExtension(graph!.FullName);
        var newKey = Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();
        graph.Delete();
        using (var stream = zip.CreateEntry($"GatiShared/{newKey}.onnx").Open()) stream.Write(bytes);
        var replaced = 0;
        foreach (var entry in zip.Entries.Where(e => e.FullName.EndsWith("Model.key", StringComparison.Ordinal)).ToArray())
        {
            byte[] model;
            using (var stream = entry.Open())
            using (var buffer = new MemoryStream())
            {
                stream.CopyTo(buffer);
                model = buffer.ToArray();
            }
            var changed = false;
            foreach (var encoding in new Encoding[] { Encoding.UTF8, Encoding.Unicode })
            {
                var from = encoding.GetBytes(oldKey);
                var to = encoding.GetBytes(newKey);
                for (var i = model.AsSpan().IndexOf(from); i >= 0; i = model.AsSpan().IndexOf(from))
                {
                    to.CopyTo(model, i);
                    changed = true;
                    replaced++;
                }
            }
            if (!changed) continue;
            var name = entry.FullName;
            entry.Delete();
            using var stream2 = zip.CreateEntry(name).Open();
            stream2.Write(model);
        }
        Assert.True(replaced > 0, "no model stream refers to the graph");
    }
}
